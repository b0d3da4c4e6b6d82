//! A call across two relays clustered over NATS: bots, relays and `nats-server` as processes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chinwag_e2e::audio::tone_amplitude;
use chinwag_e2e::{NatsServer, RelayProcess, http_get, metric};
use common::{assert_pattern_bars, finish, peer, relay, spawn_bot, stats, temp_dir, wait_for_participants};
use serde_json::Value;

/// Waits until the relay is connected to NATS and sees `nodes` relays, itself included.
fn wait_for_cluster(relay: &RelayProcess, nodes: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = runtime.block_on(http_get(relay.addr, "/metrics")).unwrap();
        if metric(&text, "chinwag_cluster_connected") == Some(1)
            && metric(&text, "chinwag_cluster_nodes") == Some(nodes)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{} never saw a cluster of {nodes}:\n{text}", relay.url);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `viewer` got from `from`, who sent a `hz` tone and the 320×240 test pattern at 15 fps.
fn check_received(viewer: &str, stats: &Value, record: &Path, from: &str, hz: f32, own_hz: f32) {
    let audio = &peer(stats, from)["audio"];
    eprintln!("{viewer} from {from}: {audio}");
    let received = audio["packets_received"].as_u64().unwrap();
    let lost = audio["packets_lost"].as_u64().unwrap();
    assert!(received >= 250, "{viewer} got {received} audio packets from {from} in 6 s: {audio}");
    assert!(lost * 50 <= received, "{viewer} lost {lost} of {from}'s audio packets (over 2 %): {audio}");

    let recorded = chinwag_capture::read_wav_48k_mono(&record.join(format!("{from}.wav"))).unwrap();
    let middle = &recorded[recorded.len() / 4..recorded.len() * 3 / 4];
    let (theirs, mine) = (tone_amplitude(middle, hz, 48_000), tone_amplitude(middle, own_hz, 48_000));
    assert!(theirs > 0.2, "{viewer} heard {from}'s {hz} Hz tone at {theirs:.3}");
    assert!(mine < 0.05, "{viewer} heard its own {own_hz} Hz tone in {from}'s audio at {mine:.3}");

    let video = &peer(stats, from)["video"];
    eprintln!("{viewer} from {from}: {video}");
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(320), Some(240)), "{video}");
    let fps = video["fps"].as_f64().unwrap();
    assert!((12.0..=16.0).contains(&fps), "sent at 15 fps, {viewer} received {fps:.1}");
    assert!(video["frames_received"].as_u64().unwrap() >= 60, "{video}");
    assert_eq!(video["decode_errors"].as_u64(), Some(0), "{video}");

    // The last frame received is the pattern: seven bars across the top two-thirds.
    let jpeg = std::fs::read(record.join(format!("{from}.jpg"))).expect("the viewer wrote the last frame");
    assert_pattern_bars(&jpeg, &format!("{viewer} seeing {from}"));
}

#[test]
fn bots_on_two_clustered_relays_hear_and_see_each_other() {
    let dir = temp_dir("cluster");
    let Some(nats) = NatsServer::start_for_test(&dir.join("nats"), "bots on two relays") else { return };
    let a = relay(&["--cluster", &nats.url(), "--node-id", "a"]);
    let b = relay(&["--cluster", &nats.url(), "--node-id", "b"]);
    wait_for_cluster(&a, 2);
    wait_for_cluster(&b, 2);

    let sends = |hz: &'static str| {
        ["--send-audio", hz, "--send-video", "pattern", "--video-size", "320x240", "--video-fps", "15"]
    };
    let (ann_record, ann_json) = (dir.join("ann"), dir.join("ann.json"));
    let (ben_record, ben_json) = (dir.join("ben"), dir.join("ben.json"));
    let mut ann_flags = sends("tone:440").to_vec();
    ann_flags.extend(["--record", ann_record.to_str().unwrap(), "--duration", "8"]);
    ann_flags.extend(["--stats-json", ann_json.to_str().unwrap()]);
    let ann = spawn_bot(&a.url, "Ann", &ann_flags, &[]);
    wait_for_participants(&a, 1);
    let mut ben_flags = sends("tone:660").to_vec();
    ben_flags.extend(["--record", ben_record.to_str().unwrap(), "--duration", "7"]);
    ben_flags.extend(["--stats-json", ben_json.to_str().unwrap()]);
    let ben = spawn_bot(&b.url, "Ben", &ben_flags, &[]);
    assert!(finish(ben).status.success());
    assert!(finish(ann).status.success());

    check_received("Ann", &stats(&ann_json), &ann_record, "Ben", 660.0, 440.0);
    check_received("Ben", &stats(&ben_json), &ben_record, "Ann", 440.0, 660.0);
    std::fs::remove_dir_all(dir).unwrap();
}
