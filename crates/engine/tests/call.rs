//! The engine's promises to whoever holds a [`Call`]: never kept waiting, plain failures on
//! the first attempt, one notice per device problem, and statistics that come from the call.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use chinwag_e2e::{RelayProcess, workspace_binary};
use chinwag_engine::{Call, CallConfig, CallEvent, InputSpec, OutputSpec, TransportConfig, TransportError};

/// A server that accepts TCP connections and never answers: a stuck relay, or a firewall
/// that swallows everything. It holds what it accepted for `seconds`.
fn black_hole(seconds: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            if let Ok((stream, _)) = listener.accept() {
                held.push(stream);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    addr
}

fn next_event(call: &Call, within: Duration, mut pick: impl FnMut(&CallEvent) -> bool) -> CallEvent {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match call.events().recv_timeout(left) {
            Ok(event) if pick(&event) => return event,
            Ok(_) => {}
            Err(error) => panic!("no such event within {within:?}: {error}"),
        }
    }
}

#[test]
fn dropping_a_call_never_waits_even_while_the_relay_does_not_answer() {
    let addr = black_hole(20);
    let mut transport = TransportConfig::new(addr.to_string(), "r", "Stuck");
    transport.retry_first_connect = true;
    let mut config = CallConfig::new(transport);
    config.input = InputSpec::Tone(440.0);
    let call = Call::start(config).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let dropping = Instant::now();
    drop(call);
    let took = dropping.elapsed();
    assert!(took < Duration::from_millis(200), "dropping the call took {took:?}");

    // Leaving with a deadline waits for the threads, and they do finish.
    let mut transport = TransportConfig::new(addr.to_string(), "r", "Stuck again");
    transport.retry_first_connect = true;
    let call = Call::start(CallConfig::new(transport)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let leaving = Instant::now();
    assert!(call.leave(Duration::from_secs(1)), "the call's threads did not finish");
    assert!(leaving.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_refused_port_fails_the_first_attempt_even_for_a_patient_caller() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut transport = TransportConfig::new(port.to_string(), "r", "Early");
    transport.retry_first_connect = true;
    let call = Call::start(CallConfig::new(transport)).unwrap();
    let started = Instant::now();
    let event = next_event(&call, Duration::from_secs(5), |event| {
        matches!(event, CallEvent::Failed(_) | CallEvent::Reconnecting { .. })
    });
    assert!(
        matches!(event, CallEvent::Failed(TransportError::ConnectionRefused { .. })),
        "expected a refusal, got {event:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_speaker_that_cannot_open_is_one_notice_not_a_storm() {
    let relay = RelayProcess::start(&workspace_binary("chinwag-relay"), &[]).unwrap();
    let mut config = CallConfig::new(TransportConfig::new(relay.url.clone(), "r", "Listener"));
    config.output = OutputSpec::Device(Some("a speaker that is not there".into()));
    let call = Call::start(config).unwrap();
    let mut problems = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while let Ok(event) = call.events().recv_timeout(until.saturating_duration_since(Instant::now())) {
        if let CallEvent::DeviceProblem { error, fallback } = event {
            problems.push(format!("{error} -> {fallback}"));
        }
    }
    assert!(!problems.is_empty(), "the missing speaker is reported");
    // The named speaker, then (on a machine without sound) the default one: at most one
    // notice per fallback, and never the same one twice.
    assert!(problems.len() <= 2, "{problems:#?}");
    let mut unique = problems.clone();
    unique.dedup();
    assert_eq!(unique, problems);
    assert!(problems[0].contains("a speaker that is not there"), "{problems:#?}");
}
