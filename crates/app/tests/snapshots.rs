//! Pictures of the main screens, rendered headless (wgpu) and compared with the checked-in
//! images in `tests/snapshots`. `UPDATE_SNAPSHOTS=1 cargo test -p chinwag --test snapshots`
//! redraws them after an intended change.

use std::time::Duration;

use chinwag::fake::{FakeRemote, fake_backend};
use chinwag::{ChinwagApp, Settings};
use chinwag_engine::{
    CallEvent, CallStats, ErrorCode, ParticipantId, Peer, PeerStats, Sketch, TransportError, VideoFrame,
};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;

fn app(settings: Settings) -> (Harness<'static, ChinwagApp>, FakeRemote) {
    let (backend, remote) = fake_backend();
    let app = ChinwagApp::with_backend(Box::new(backend), settings);
    let harness = Harness::builder()
        .with_size([1000.0, 640.0])
        .build_ui_state(|ui, app: &mut ChinwagApp| app.show(ui), app);
    (harness, remote)
}

fn settings() -> Settings {
    Settings {
        server: "relay.example:7300".into(),
        room: "standup".into(),
        name: "Ada".into(),
        ..Settings::default()
    }
}

/// Colour bars, like the engine's test pattern, made here rather than checked in.
fn bars(width: u32, height: u32) -> VideoFrame {
    const BARS: [[u8; 4]; 7] = [
        [192, 192, 192, 255],
        [192, 192, 0, 255],
        [0, 192, 192, 255],
        [0, 192, 0, 255],
        [192, 0, 192, 255],
        [192, 0, 0, 255],
        [0, 0, 192, 255],
    ];
    let mut rgba = Vec::with_capacity(width as usize * height as usize * 4);
    for _ in 0..height {
        for x in 0..width {
            rgba.extend_from_slice(&BARS[(x * 7 / width) as usize]);
        }
    }
    VideoFrame { width, height, rgba }
}

/// Connection figures as a call on a good network shows them.
fn figures() -> CallStats {
    let samples = |values: &[f32]| {
        let mut samples = Sketch::default();
        values.iter().for_each(|&value| samples.record_ms(f64::from(value)));
        samples
    };
    let peer = |id, name: &str| PeerStats {
        id: ParticipantId(id),
        name: name.into(),
        present: true,
        packets_received: 990,
        packets_lost: 10,
        concealed_ms: 200,
        jitter_buffer_ms: samples(&[20.0, 30.0, 40.0]),
        jitter_target_ms: 30.0,
        mouth_to_ear_ms: samples(&[60.0, 70.0, 90.0]),
        ..PeerStats::default()
    };
    CallStats {
        connected: true,
        rtt_ms: samples(&[2.0, 3.0, 5.0]),
        peers: vec![peer(2, "Demo bot"), peer(3, "Bo Lin"), peer(4, "Cy")],
        ..CallStats::default()
    }
}

/// Lets panels that changed size lay out again before the picture is taken.
fn settle(harness: &mut Harness<'_, ChinwagApp>) {
    harness.run_steps(3);
    harness.run();
}

#[test]
fn connect_screen() {
    let (mut harness, _remote) = app(settings());
    settle(&mut harness);
    harness.snapshot("connect_screen");
}

#[test]
fn connect_screen_with_an_error() {
    let (mut harness, remote) = app(settings());
    harness.run();
    harness.get_by_label("Join").click();
    harness.run();
    remote.send(CallEvent::Failed(TransportError::Refused {
        code: ErrorCode::WrongPassword,
        message: "wrong password".into(),
    }));
    settle(&mut harness);
    harness.snapshot("connect_screen_wrong_password");
}

#[test]
fn call_screen_with_three_peers() {
    let (mut harness, remote) = app(settings());
    harness.run();
    harness.get_by_label("Join").click();
    harness.run();
    let peer =
        |id, name: &str, muted, camera| Peer { id: ParticipantId(id), name: name.into(), muted, camera };
    remote.send(CallEvent::Joined {
        id: ParticipantId(1),
        room: "standup".into(),
        peers: vec![
            peer(2, "Demo bot", false, true),
            peer(3, "Bo Lin", true, false),
            peer(4, "Cy", false, false),
        ],
        rejoined: false,
    });
    remote.set_frame(ParticipantId(2), bars(320, 240));
    remote.set_stats(figures());
    harness.run();
    harness.get_by_label("Connection").click();
    settle(&mut harness);
    harness.snapshot("call_screen");

    remote.send(CallEvent::Reconnecting {
        error: TransportError::Lost {
            url: "ws://relay.example:7300/v1".into(),
            reason: "reset by peer".into(),
        },
        retry_in: Duration::from_secs(2),
    });
    settle(&mut harness);
    harness.snapshot("call_screen_reconnecting");
}
