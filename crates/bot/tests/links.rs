//! Calls through the link emulator, as on a home connection: voice must stay on time with
//! the camera on, and a receiver with a slow downlink keeps hearing everything. Short
//! versions of what `real-links-bench` measures in full; bounds are generous, for a shared
//! machine, yet far below what the call did before rate control (0.3-1.7 s late, 33-76 %
//! lost, receivers disconnected every few seconds).

mod common;

use std::path::Path;
use std::time::Duration;

use chinwag_e2e::audio::{speech_of_length, write_wav_48k_mono};
use chinwag_e2e::clip::write_camera_like_clip;
use chinwag_e2e::linkcall::{CallOutcome, LinkCall, Listener, run_link_call};
use chinwag_e2e::{Direction, LinkConfig, LinkEmulator};
use common::{BOT, relay, temp_dir};

const TEXT: &str = "The quick brown fox jumps over the lazy dog. A call should sound as clear as this, \
                    whatever else the link carries.";
const SECONDS: f64 = 16.0;
const MS: Duration = Duration::from_millis(1);

/// Makes the speech and the camera-like clip in `dir`, then a call of them from a speaker
/// dialling `speaker` (through `speaker_link`, if any) to `listeners`, measured from 8 s on.
fn call(dir: &Path, speaker: (String, Option<&LinkEmulator>), listeners: Vec<Listener<'_>>) -> CallOutcome {
    let speech = speech_of_length(dir, TEXT, SECONDS - 1.0).unwrap();
    let speech_path = dir.join("speech-long.wav");
    write_wav_48k_mono(&speech_path, &speech).unwrap();
    let clip = dir.join("camera.mjpeg");
    write_camera_like_clip(&clip, 640, 480, 30).unwrap();
    let outcome = run_link_call(
        dir,
        &LinkCall {
            bot: BOT.into(),
            speaker_server: speaker.0,
            speaker_link: speaker.1,
            listeners,
            speech_path: &speech_path,
            speech: &speech,
            video: Some(&clip),
            seconds: SECONDS,
            measure_from: Duration::from_secs(8),
        },
    )
    .unwrap();
    eprintln!("{outcome:#?}");
    outcome
}

#[test]
fn voice_stays_on_time_through_a_capped_uplink_with_the_camera_on() {
    let dir = temp_dir("capped-uplink");
    let relay = relay(&[]);
    // 1 Mb/s up with a half-second queue: a camera-like picture at 30 fps wants 9 Mb/s.
    let up = Direction::capped(1_000_000.0, 500 * MS);
    let link = LinkEmulator::start(relay.addr, LinkConfig { up, down: Direction::clean(), seed: 1 }).unwrap();
    let listener = Listener { name: "Listener", server: relay.url.clone(), link: None };
    let outcome = call(&dir, (link.url(), Some(&link)), vec![listener]);
    let heard = &outcome.heard[0];
    assert!(heard.pieces >= 4, "too little speech found in the recording: {heard:?}");
    assert!(heard.m2e_p95_ms <= 250.0, "voice is late behind video: {heard:?}");
    assert!(heard.speech_lost <= 0.05, "speech lost: {heard:?}");
    assert!(heard.video_fps > 2.0, "video stopped altogether: {heard:?}");
    let uplink = outcome.uplink_kbps.unwrap();
    assert!(uplink >= 300.0, "video settled far below the link: {uplink:.0} kb/s of 1000");
    assert_eq!(outcome.speaker_disconnects + heard.disconnects, 0, "{outcome:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_slow_receiver_keeps_its_voice_and_gets_fewer_frames_without_being_disconnected() {
    let dir = temp_dir("slow-receiver");
    let relay = relay(&[]);
    let down = Direction::capped(500_000.0, 200 * MS);
    let link = LinkEmulator::start(relay.addr, LinkConfig { up: Direction::clean(), down, seed: 2 }).unwrap();
    let listeners = vec![
        Listener { name: "Slow", server: link.url(), link: Some(&link) },
        Listener { name: "Fast", server: relay.url.clone(), link: None },
    ];
    let outcome = call(&dir, (relay.url.clone(), None), listeners);
    let (slow, fast) = (&outcome.heard[0], &outcome.heard[1]);
    assert_eq!(slow.disconnects, 0, "the slow receiver was disconnected: {slow:?}");
    assert!(slow.pieces >= 4, "too little speech found in the slow receiver's recording: {slow:?}");
    assert!(slow.m2e_p95_ms <= 300.0, "the slow receiver's voice is late: {slow:?}");
    assert!(slow.speech_lost <= 0.05, "the slow receiver lost speech: {slow:?}");
    assert!(slow.video_fps > 0.5, "the slow receiver got no video: {slow:?}");
    assert!(
        slow.video_kbps < fast.video_kbps / 2.0,
        "the slow receiver's video was not thinned: {outcome:?}"
    );
    assert!(
        slow.video_width < fast.video_width,
        "the slow receiver was not given the small layer: {outcome:?}"
    );
    assert!(fast.video_fps >= 10.0, "the fast receiver was held back: {fast:?}");
    assert!(fast.speech_lost <= 0.05 && fast.m2e_p95_ms <= 200.0, "{fast:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
