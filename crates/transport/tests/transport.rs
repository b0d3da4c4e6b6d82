//! The transport against a real relay process on loopback.

use std::time::{Duration, Instant};

use chinwag_e2e::{RelayProcess, workspace_binary};
use chinwag_proto::{
    ErrorCode, MediaFlags, MediaHeader, MediaKind, MediaTimestamp, ParticipantId, RelayTime, SeqNo,
};
use chinwag_transport::{Transport, TransportConfig, TransportError, TransportEvent};

fn relay(args: &[&str]) -> RelayProcess {
    RelayProcess::start(&workspace_binary("chinwag-relay"), args).expect("relay starts")
}

fn config(relay: &RelayProcess, room: &str, name: &str) -> TransportConfig {
    // The address as a person might type it: no scheme, no path.
    TransportConfig::new(relay.addr.to_string(), room, name)
}

/// The next event that `pick` accepts, within `within`.
fn wait_for<T>(
    transport: &Transport,
    within: Duration,
    mut pick: impl FnMut(TransportEvent) -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match transport.events().recv_timeout(left) {
            Ok(event) => {
                if let Some(found) = pick(event) {
                    return found;
                }
            }
            Err(_) => panic!("the expected event did not come within {within:?}"),
        }
    }
}

fn audio(seq: u32) -> MediaHeader {
    MediaHeader {
        kind: MediaKind::Audio,
        flags: MediaFlags::default(),
        sender: ParticipantId(0),
        seq: SeqNo(seq),
        timestamp: MediaTimestamp(seq * 960),
        capture_time: RelayTime::from_micros(0),
    }
}

const SECONDS_5: Duration = Duration::from_secs(5);

#[test]
fn two_transports_join_see_each_other_exchange_media_and_learn_the_clock() {
    let relay = relay(&[]);
    let ada = Transport::start(config(&relay, "r", "Ada")).unwrap();
    let ada_id = wait_for(&ada, SECONDS_5, |event| match event {
        TransportEvent::Joined { id, rejoined: false, .. } => Some(id),
        _ => None,
    });
    let bob = Transport::start(config(&relay, "r", "Bob")).unwrap();
    let peers = wait_for(&bob, SECONDS_5, |event| match event {
        TransportEvent::Joined { peers, .. } => Some(peers),
        _ => None,
    });
    assert_eq!(peers.len(), 1);
    assert_eq!((peers[0].id, peers[0].name.as_str()), (ada_id, "Ada"));
    wait_for(&ada, SECONDS_5, |event| {
        matches!(event, TransportEvent::PeerJoined(peer) if peer.name == "Bob").then_some(())
    });

    ada.set_state(true, false);
    wait_for(&bob, SECONDS_5, |event| match event {
        TransportEvent::PeerState(state) if state.id == ada_id && state.muted => Some(()),
        _ => None,
    });
    for seq in 0..5 {
        ada.send_media(&audio(seq), &[seq as u8; 60]);
    }
    let mut seqs = Vec::new();
    while seqs.len() < 5 {
        let (header, payload) = wait_for(&bob, SECONDS_5, |event| match event {
            TransportEvent::Audio(media) => Some((media.header, media.payload)),
            _ => None,
        });
        assert_eq!(header.sender, ada_id);
        assert_eq!(payload.len(), 60);
        seqs.push(header.seq.0);
    }
    assert_eq!(seqs, [0, 1, 2, 3, 4], "audio arrives in order");

    // Video goes straight to its own line, for the decoder.
    let video = MediaHeader { kind: MediaKind::Video, ..audio(0) };
    ada.send_media(&video, &[7; 1000]);
    let frame = bob.video().recv_timeout(SECONDS_5).expect("the video frame arrives");
    assert_eq!(
        (frame.header.kind, frame.header.sender, frame.payload.len()),
        (MediaKind::Video, ada_id, 1000)
    );

    // Pings every second measure the round trip and give a relay clock estimate.
    let rtt = wait_for(&ada, Duration::from_secs(3), |event| match event {
        TransportEvent::Rtt(rtt) => Some(rtt),
        _ => None,
    });
    assert!(rtt < Duration::from_millis(500), "loopback RTT {rtt:?}");
    wait_for(&bob, Duration::from_secs(3), |event| matches!(event, TransportEvent::Rtt(_)).then_some(()));
    let now = Instant::now();
    let (ada_clock, bob_clock) = (ada.relay_time(now).unwrap(), bob.relay_time(now).unwrap());
    let apart = bob_clock.as_micros().abs_diff(ada_clock.as_micros());
    assert!(apart < 50_000, "two estimates of one relay clock differ by {apart} µs");

    drop(bob);
    wait_for(&ada, SECONDS_5, |event| matches!(event, TransportEvent::PeerLeft(_)).then_some(()));
    ada.leave();
    wait_for(&ada, SECONDS_5, |event| matches!(event, TransportEvent::Left).then_some(()));
}

#[test]
fn refusals_and_unreachable_relays_fail_with_a_reason() {
    let relay = relay(&[]);
    let mut owner_config = config(&relay, "locked", "Owner");
    owner_config.password = Some("right".into());
    let owner = Transport::start(owner_config).unwrap();
    wait_for(&owner, SECONDS_5, |event| matches!(event, TransportEvent::Joined { .. }).then_some(()));

    let mut guest_config = config(&relay, "locked", "Guest");
    guest_config.password = Some("wrong".into());
    guest_config.retry_first_connect = true;
    let guest = Transport::start(guest_config).unwrap();
    let error = wait_for(&guest, SECONDS_5, |event| match event {
        TransportEvent::Failed(error) => Some(error),
        _ => None,
    });
    assert!(matches!(error, TransportError::Refused { code: ErrorCode::WrongPassword, .. }), "{error}");
    assert!(error.is_permanent(), "retrying does not help a wrong password");
    assert!(error.to_string().contains("password"), "{error}");

    // A refused port and a name that does not resolve fail the first attempt, even for a
    // caller that waits for a slow relay: they are mistakes to fix, not moments to wait out.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut refused_config = TransportConfig::new(closed_port.to_string(), "r", "n");
    refused_config.retry_first_connect = true;
    let nobody = Transport::start(refused_config).unwrap();
    let error = wait_for(&nobody, SECONDS_5, |event| match event {
        TransportEvent::Failed(error) => Some(error),
        TransportEvent::Disconnected { error, .. } => panic!("retried a refused port: {error}"),
        _ => None,
    });
    assert!(matches!(error, TransportError::ConnectionRefused { .. }), "{error}");
    let text = error.to_string();
    assert!(text.starts_with(&format!("cannot reach relay at ws://{closed_port}/v1")), "{text}");
    assert!(text.contains("nothing is listening"), "{text}");

    let mut unknown_config = TransportConfig::new("no-such-relay.invalid", "r", "n");
    unknown_config.retry_first_connect = true;
    let unknown = Transport::start(unknown_config).unwrap();
    let error = wait_for(&unknown, Duration::from_secs(10), |event| match event {
        TransportEvent::Failed(error) => Some(error),
        TransportEvent::Disconnected { error, .. } => panic!("retried a name that does not resolve: {error}"),
        _ => None,
    });
    assert!(matches!(error, TransportError::UnknownHost { .. }), "{error}");
    assert!(error.to_string().contains("no-such-relay.invalid"), "{error}");
    assert!(!error.to_string().contains("lookup"), "no resolver jargon: {error}");

    let bad = Transport::start(TransportConfig::new("ftp://x", "r", "n")).err().unwrap();
    assert!(bad.to_string().contains("ws://"), "{bad}");
}

#[test]
fn a_restarted_relay_is_rejoined_and_media_flows_again() {
    let relay_process = relay(&[]);
    let addr = relay_process.addr.to_string();
    let ada = Transport::start(config(&relay_process, "r", "Ada")).unwrap();
    let bob = Transport::start(config(&relay_process, "r", "Bob")).unwrap();
    for transport in [&ada, &bob] {
        wait_for(transport, SECONDS_5, |event| matches!(event, TransportEvent::Joined { .. }).then_some(()));
    }
    // A participant that has told the room its state (muted, camera on) repeats it after the
    // rejoin; this once deadlocked the connection thread.
    ada.set_state(true, true);
    wait_for(&bob, SECONDS_5, |event| match event {
        TransportEvent::PeerState(state) if state.muted => Some(()),
        _ => None,
    });
    drop(relay_process);
    for transport in [&ada, &bob] {
        wait_for(transport, SECONDS_5, |event| {
            matches!(event, TransportEvent::Disconnected { .. }).then_some(())
        });
    }
    let restarted = Instant::now();
    let _relay_again = relay(&["--listen", &addr]);
    for transport in [&ada, &bob] {
        wait_for(transport, Duration::from_secs(10), |event| {
            matches!(event, TransportEvent::Joined { rejoined: true, .. }).then_some(())
        });
    }
    // Each may have joined before the other; wait until Bob sees Ada's audio, and her state.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 0;
    let mut state_again = false;
    let arrived = loop {
        assert!(Instant::now() < deadline, "no audio after the restart");
        ada.send_media(&audio(seq), b"again");
        seq += 1;
        match bob.events().recv_timeout(Duration::from_millis(50)) {
            Ok(TransportEvent::Audio(media)) => break media.payload,
            Ok(TransportEvent::PeerState(state)) if state.muted && state.camera => state_again = true,
            Ok(TransportEvent::Joined { peers, .. }) => {
                state_again |= peers.iter().any(|peer| peer.name == "Ada" && peer.muted && peer.camera);
            }
            Ok(TransportEvent::PeerJoined(peer)) => state_again |= peer.muted && peer.camera,
            _ => {}
        }
    };
    assert_eq!(&arrived[..], b"again");
    let state_deadline = Instant::now() + SECONDS_5;
    while !state_again {
        assert!(Instant::now() < state_deadline, "Ada's state was not repeated after the rejoin");
        if let Ok(TransportEvent::PeerState(state)) = bob.events().recv_timeout(Duration::from_millis(50)) {
            state_again = state.muted && state.camera;
        }
    }
    let took = restarted.elapsed();
    assert!(took < Duration::from_secs(8), "audio flowed again {took:?} after the restart");
}

/// A server that accepts TCP connections and never answers: a relay stuck, or a firewall that
/// swallows everything.
fn black_hole() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if let Ok((stream, _)) = listener.accept() {
                held.push(stream);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    (addr, thread)
}

#[test]
fn leaving_ends_the_connection_thread_at_once_even_while_the_relay_does_not_answer() {
    let (addr, _server) = black_hole();
    let mut config = TransportConfig::new(addr.to_string(), "r", "n");
    config.retry_first_connect = true;
    let transport = Transport::start(config).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    transport.leave();
    assert!(transport.wait_finished(Duration::from_secs(1)), "the connection thread is still dialling");
    wait_for(&transport, SECONDS_5, |event| matches!(event, TransportEvent::Left).then_some(()));
    eprintln!("left {:?} after asking", asked.elapsed());
    // Dropping never waits either.
    let dropped = Instant::now();
    drop(transport);
    assert!(dropped.elapsed() < Duration::from_millis(100));
}

/// A TCP proxy whose client side can be cut while its relay side stays open: the relay goes
/// on seeing a connection that only looks alive, as after a client's network changed.
struct HalfOpenProxy {
    addr: std::net::SocketAddr,
    client_sides: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl HalfOpenProxy {
    fn start(upstream: std::net::SocketAddr) -> HalfOpenProxy {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client_sides = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&client_sides);
        std::thread::spawn(move || {
            // Relay sides are never closed while the test runs.
            let mut relay_sides = Vec::new();
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(relay) = TcpStream::connect(upstream) else { return };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), relay.try_clone().unwrap()),
                    (relay.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                    });
                }
                kept.lock().unwrap().push(client);
                relay_sides.push(relay);
            }
        });
        HalfOpenProxy { addr, client_sides }
    }

    fn cut_client_sides(&self) {
        for client in self.client_sides.lock().unwrap().drain(..) {
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_rejoin_is_not_kept_out_of_a_full_room_by_its_own_old_connection() {
    let relay = relay(&["--max-participants", "2"]);
    let ada = Transport::start(config(&relay, "r", "Ada")).unwrap();
    wait_for(&ada, SECONDS_5, |event| matches!(event, TransportEvent::Joined { .. }).then_some(()));
    let proxy = HalfOpenProxy::start(relay.addr);
    let bob = Transport::start(TransportConfig::new(proxy.addr.to_string(), "r", "Bob")).unwrap();
    let old_id = wait_for(&bob, SECONDS_5, |event| match event {
        TransportEvent::Joined { id, .. } => Some(id),
        _ => None,
    });
    wait_for(&ada, SECONDS_5, |event| matches!(event, TransportEvent::PeerJoined(_)).then_some(()));

    proxy.cut_client_sides();
    let new_id = wait_for(&bob, Duration::from_secs(10), |event| match event {
        TransportEvent::Joined { id, rejoined: true, .. } => Some(id),
        TransportEvent::Failed(error) => panic!("Bob could not rejoin: {error}"),
        _ => None,
    });
    assert_ne!(new_id, old_id);
    wait_for(&ada, SECONDS_5, |event| match event {
        TransportEvent::PeerLeft(id) => {
            assert_eq!(id, old_id, "Bob's old connection gave way");
            Some(())
        }
        _ => None,
    });
}
