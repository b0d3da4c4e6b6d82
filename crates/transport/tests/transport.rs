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
            TransportEvent::Media { header, payload, .. } => Some((header, payload)),
            _ => None,
        });
        assert_eq!(header.sender, ada_id);
        assert_eq!(payload.len(), 60);
        seqs.push(header.seq.0);
    }
    assert_eq!(seqs, [0, 1, 2, 3, 4], "audio arrives in order");

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

    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let nobody = Transport::start(TransportConfig::new(closed_port.to_string(), "r", "n")).unwrap();
    let error = wait_for(&nobody, SECONDS_5, |event| match event {
        TransportEvent::Failed(error) => Some(error),
        _ => None,
    });
    let text = error.to_string();
    assert!(text.starts_with(&format!("cannot reach relay at ws://{closed_port}/v1")), "{text}");

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
    // Each may have joined before the other; wait until Bob sees Ada's audio.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 0;
    let arrived = loop {
        assert!(Instant::now() < deadline, "no audio after the restart");
        ada.send_media(&audio(seq), b"again");
        seq += 1;
        if let Ok(TransportEvent::Media { payload, .. }) =
            bob.events().recv_timeout(Duration::from_millis(50))
        {
            break payload;
        }
    };
    assert_eq!(&arrived[..], b"again");
    let took = restarted.elapsed();
    assert!(took < Duration::from_secs(8), "audio flowed again {took:?} after the restart");
}
