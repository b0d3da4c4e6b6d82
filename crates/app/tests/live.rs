//! The app on the real engine over loopback: an embedded relay, a headless peer, and the UI
//! driven by accessibility label.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use chinwag::embedded::{DEMO_BOT_NAME, EmbeddedRelay};
use chinwag::{Args, ChinwagApp, EngineBackend, Settings};
use chinwag_engine::{Call, CallConfig, CallEvent, InputSpec, OutputSpec, TransportConfig};
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
    let mut harness = app(ChinwagApp::with_backend(Box::new(EngineBackend::default()), settings)
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
fn the_demo_shows_the_bot_within_seconds_and_keeps_what_was_typed() {
    let settings = Settings { name: "Newcomer".into(), room: "my-room".into(), ..Settings::default() };
    let mut harness = app(ChinwagApp::with_backend(Box::new(EngineBackend::default()), settings)
        .with_audio(InputSpec::Silence, OutputSpec::None)
        .with_args(Args { demo: true, ..Args::default() }));
    step_until(&mut harness, "the demo bot's video", |app| {
        app.call_state().is_some_and(|call| call.peers.values().any(|p| p.name == DEMO_BOT_NAME && p.camera))
    });
    harness.get_by_label(&format!("Tile: {DEMO_BOT_NAME}"));
    assert_eq!(harness.state().settings.room, "my-room", "the demo's room is its own");
    assert_eq!(harness.state().settings.name, "Newcomer");
}

/// A server that accepts TCP connections and never answers: a stuck relay.
fn black_hole() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(8).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(held);
    });
    addr
}

fn settings_for(server: String) -> Settings {
    Settings { server, room: "room".into(), name: "Ada".into(), ..Settings::default() }
}

#[test]
fn leave_returns_at_once_while_the_relay_does_not_answer() {
    let addr = black_hole();
    let mut harness =
        app(ChinwagApp::with_backend(Box::new(EngineBackend::default()), settings_for(addr.to_string()))
            .with_audio(InputSpec::Silence, OutputSpec::None));
    harness.run();
    harness.get_by_label("Join").click();
    harness.run();
    std::thread::sleep(Duration::from_millis(500));
    harness.run();
    assert!(harness.state().call_state().is_some(), "still dialling");
    let leaving = Instant::now();
    harness.get_by_label("Leave").click();
    harness.run();
    let took = leaving.elapsed();
    assert!(harness.state().call_state().is_none(), "back on the connect screen");
    assert!(took < Duration::from_secs(1), "Leave kept the window waiting for {took:?}");
}

#[test]
fn a_wrong_name_or_a_dead_port_is_told_in_plain_words_at_once() {
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cases = [
        ("no-such-relay.invalid".to_owned(), "No relay by that name", "could not be found"),
        (dead_port.to_string(), "Nothing answers at that address", "connection was refused"),
    ];
    for (server, headline, detail) in cases {
        let mut harness =
            app(ChinwagApp::with_backend(Box::new(EngineBackend::default()), settings_for(server))
                .with_audio(InputSpec::Silence, OutputSpec::None));
        harness.run();
        harness.get_by_label("Join").click();
        // The click is applied on the next frame: wait for its outcome, not for a call that
        // has not started yet.
        step_until(&mut harness, headline, |app| app.problem().is_some());
        assert!(harness.state().call_state().is_none(), "the call ended at the first attempt");
        let problem = harness.state().problem().cloned().expect("the connect screen says why");
        assert_eq!(problem.headline, headline);
        assert!(problem.detail.contains(detail), "{problem:?}");
        for jargon in ["os error", "lookup address", "failed to"] {
            assert!(!problem.detail.contains(jargon), "jargon in {problem:?}");
        }
        harness.get_by_label(headline);
    }
}

#[test]
fn a_relay_shutting_down_is_shown_as_such_until_it_is_back() {
    use chinwag_e2e::{RelayProcess, workspace_binary};
    let mut relay = RelayProcess::start(&workspace_binary("chinwag-relay"), &[]).unwrap();
    let mut harness =
        app(ChinwagApp::with_backend(Box::new(EngineBackend::default()), settings_for(relay.url.clone()))
            .with_audio(InputSpec::Silence, OutputSpec::None));
    harness.run();
    harness.get_by_label("Join").click();
    step_until(&mut harness, "joined", |app| app.call_state().is_some_and(|call| call.my_id.is_some()));
    relay.terminate(Duration::from_secs(5)).unwrap();
    // The relay said why it went; the refused reconnections that follow must not hide it.
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        harness.step();
        if let Some(call) = harness.state().call_state() {
            let line = call.status_line();
            if seen.last() != Some(&line) {
                seen.push(line);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let retrying: Vec<&String> = seen.iter().filter(|line| line.contains("Reconnecting")).collect();
    assert!(!retrying.is_empty(), "{seen:#?}");
    for line in retrying {
        assert!(line.contains("The relay is shutting down or restarting"), "{seen:#?}");
    }
    assert!(!seen.iter().any(|line| line.contains("refused")), "{seen:#?}");
}

#[test]
fn hosting_on_a_busy_port_offers_a_free_one() {
    let busy = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let port = busy.local_addr().unwrap().port();
    let settings = Settings { host_port: port, name: "Host".into(), ..Settings::default() };
    let mut harness = app(ChinwagApp::with_backend(Box::new(EngineBackend::default()), settings)
        .with_audio(InputSpec::Silence, OutputSpec::None));
    harness.run();
    harness.get_by_label("Host a call").click();
    harness.run();
    let problem = harness.state().problem().cloned().expect("hosting failed");
    assert_eq!(problem.headline, format!("Port {port} is already in use"));
    let offered = harness.state().settings.host_port;
    assert_ne!(offered, port);
    assert!(problem.detail.contains(&format!("Port {offered} is free")), "{problem:?}");
    harness.get_by_label("Host a call").click();
    step_until(&mut harness, "hosting on the free port", |app| {
        app.call_state().is_some_and(|call| call.my_id.is_some() && call.hosting.is_some())
    });
}
