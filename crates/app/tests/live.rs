//! The app on the real engine over loopback: an embedded relay, a headless peer, and the UI
//! driven by accessibility label.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use chinwag::embedded::{DEMO_BOT_NAME, EmbeddedRelay};
use chinwag::{Args, ChinwagApp, EngineBackend, Settings};
use chinwag_engine::{Call, CallConfig, CallEvent, InputSpec, OutputSpec};
use chinwag_transport::TransportConfig;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;

const PATIENCE: Duration = Duration::from_secs(10);

fn app(app: ChinwagApp) -> Harness<'static, ChinwagApp> {
    Harness::builder().with_size([1000.0, 640.0]).build_ui_state(|ui, app: &mut ChinwagApp| app.show(ui), app)
}

/// Steps the UI in real time until `done` holds.
fn step_until(harness: &mut Harness<'_, ChinwagApp>, what: &str, done: impl Fn(&ChinwagApp) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done(harness.state()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        harness.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    harness.run();
}

#[test]
fn pressing_mute_reaches_the_other_participant() {
    let relay = EmbeddedRelay::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("a free port");
    let peer = Call::start(CallConfig::new(TransportConfig::new(relay.loopback_url(), "room", "Peer")))
        .expect("the peer starts");

    let settings = Settings {
        server: relay.loopback_url(),
        room: "room".into(),
        name: "Ada".into(),
        ..Settings::default()
    };
    let mut harness = app(ChinwagApp::with_backend(Box::new(EngineBackend), settings)
        .with_audio(InputSpec::Silence, OutputSpec::None));
    harness.run();
    harness.get_by_label("Join").click();
    step_until(&mut harness, "the app to see the peer", |app| {
        app.call_state().is_some_and(|call| call.peers.values().any(|p| p.name == "Peer"))
    });
    harness.get_by_label("Tile: Peer");
    let app_id = harness.state().call_state().and_then(|call| call.my_id).expect("joined");

    harness.get_by_label("Mute").click();
    harness.run();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match peer.events().recv_timeout(left) {
            Ok(CallEvent::PeerState { id, muted: true, .. }) if id == app_id => break,
            Ok(_) => {}
            Err(error) => panic!("the peer never heard that Ada muted: {error}"),
        }
    }
}

#[test]
fn the_demo_shows_the_bot_within_seconds() {
    let settings = Settings { name: "Newcomer".into(), ..Settings::default() };
    let mut harness = app(ChinwagApp::with_backend(Box::new(EngineBackend), settings)
        .with_audio(InputSpec::Silence, OutputSpec::None)
        .with_args(Args { demo: true, ..Args::default() }));
    step_until(&mut harness, "the demo bot's video", |app| {
        app.call_state().is_some_and(|call| call.peers.values().any(|p| p.name == DEMO_BOT_NAME && p.camera))
    });
    harness.get_by_label(&format!("Tile: {DEMO_BOT_NAME}"));
}
