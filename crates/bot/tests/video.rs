//! Video between bots and a relay running as processes.

mod common;

use std::time::Duration;

use chinwag_codec::{JpegEncoder, VideoFrame};
use chinwag_e2e::TestClient;
use chinwag_proto::{MediaFlags, MediaHeader, MediaKind, MediaTimestamp, ParticipantId, RelayTime, SeqNo};
use common::{assert_pattern_bars, finish, peer, relay, spawn_bot, stats, temp_dir, wait_for_participants};

#[test]
fn the_test_pattern_arrives_at_the_sent_size_and_rate() {
    let dir = temp_dir("pattern");
    let relay = relay(&[]);
    let (record, json) = (dir.join("rec"), dir.join("viewer.json"));
    let viewer = spawn_bot(
        &relay.url,
        "Viewer",
        &["--record", record.to_str().unwrap(), "--duration", "7", "--stats-json", json.to_str().unwrap()],
        &[],
    );
    wait_for_participants(&relay, 1);
    let sender = spawn_bot(
        &relay.url,
        "Pattern",
        &[
            "--send-audio",
            "tone:440",
            "--send-video",
            "pattern",
            "--video-size",
            "320x240",
            "--video-fps",
            "15",
            "--duration",
            "5",
        ],
        &[],
    );
    assert!(finish(sender).status.success());
    assert!(finish(viewer).status.success());

    let stats = stats(&json);
    let video = &peer(&stats, "Pattern")["video"];
    eprintln!("{video}");
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(320), Some(240)));
    let fps = video["fps"].as_f64().unwrap();
    assert!((13.0..=16.0).contains(&fps), "sent at 15 fps, received at {fps:.1}");
    assert!(video["frames_received"].as_u64().unwrap() >= 60, "{video}");
    assert_eq!(video["decode_errors"].as_u64(), Some(0));
    assert!(video["glass_to_glass_ms"]["count"].as_u64().unwrap() > 0);

    // The last frame received is the pattern: seven bars across the top two-thirds.
    let jpeg = std::fs::read(record.join("Pattern.jpg")).expect("the viewer wrote the last frame");
    assert_pattern_bars(&jpeg, "the last frame received");
    std::fs::remove_dir_all(dir).unwrap();
}

fn video_frame(seq: u32, payload: &[u8]) -> Vec<u8> {
    let header = MediaHeader {
        kind: MediaKind::Video,
        flags: MediaFlags::default(),
        sender: ParticipantId(0),
        seq: SeqNo(seq),
        timestamp: MediaTimestamp(seq * 3000),
        capture_time: RelayTime::from_micros(0),
    };
    chinwag_proto::encode_frame(&header, payload)
}

/// Moves the width and height in a JPEG's start-of-frame segment, as a lying peer might.
fn claim_size(jpeg: &mut [u8], width: u16, height: u16) {
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).expect("a baseline JPEG has SOF0");
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
}

#[test]
fn bogus_video_is_dropped_and_counted_while_the_call_goes_on() {
    let dir = temp_dir("bogus");
    let relay = relay(&[]);
    let json = dir.join("viewer.json");
    let viewer =
        spawn_bot(&relay.url, "Viewer", &["--duration", "6", "--stats-json", json.to_str().unwrap()], &[]);
    wait_for_participants(&relay, 1);
    let talker = spawn_bot(&relay.url, "Talker", &["--send-audio", "tone:440", "--duration", "5"], &[]);
    wait_for_participants(&relay, 2);

    let mut good = Vec::new();
    let mut encoder = JpegEncoder::new(75).unwrap();
    encoder.encode(&VideoFrame::filled(64, 48, [0, 128, 255, 255]), &mut good).unwrap();
    let mut oversized = good.clone();
    claim_size(&mut oversized, 8000, 6000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (mut mallory, _) = TestClient::join(&relay.url, "r", "Mallory", None).await.unwrap();
        let garbage: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let bogus = [garbage, good[..good.len() / 2].to_vec(), oversized, vec![0xff, 0xd8, 0xff], Vec::new()];
        for (seq, payload) in bogus.iter().enumerate() {
            mallory.send_binary(video_frame(seq as u32, payload)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        mallory.send_binary(video_frame(10, &good)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        mallory.close().await;
    });
    assert!(finish(talker).status.success());
    assert!(finish(viewer).status.success(), "the viewer survived the bogus frames");

    let stats = stats(&json);
    let video = &peer(&stats, "Mallory")["video"];
    eprintln!("from Mallory: {video}");
    assert_eq!(video["decode_errors"].as_u64(), Some(5), "every bogus frame counted: {video}");
    assert_eq!(video["frames_received"].as_u64(), Some(1), "the good frame still decoded: {video}");
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(64), Some(48)));
    let audio = &peer(&stats, "Talker")["audio"];
    assert!(audio["packets_received"].as_u64().unwrap() > 150, "the call went on: {audio}");
    std::fs::remove_dir_all(dir).unwrap();
}
