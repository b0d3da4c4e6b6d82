//! What a red-team run found a hostile client could do to a relay and the people on it (issue
//! 13), and what kept honest clients out, each as a test with the relay's default flags
//! wherever the finding was about a default: a real `chinwag-relay` process on a loopback
//! port, raw WebSocket clients.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use chinwag_e2e::{Received, RelayProcess, TestClient, connect_tcp_from, http_get, media_frame, metric};
use chinwag_proto::{ClientMessage, ErrorCode, Join, MediaHeader, MediaKind, ParticipantId, ServerMessage};

const SECOND: Duration = Duration::from_secs(1);

fn relay(args: &[&str]) -> RelayProcess {
    RelayProcess::start(Path::new(env!("CARGO_BIN_EXE_chinwag-relay")), args).expect("relay starts")
}

fn join(room: &str, name: &str, resume: Option<&str>) -> Join {
    Join {
        version: 1,
        room: room.into(),
        name: name.into(),
        password: None,
        resume: resume.map(Into::into),
        token: None,
    }
}

/// Reads until `n` audio frames from `speaker` have arrived; `Err` says what happened instead.
async fn hear(mut client: TestClient, speaker: ParticipantId, n: usize) -> Result<TestClient, String> {
    let mut heard = 0;
    while heard < n {
        match client.next(10 * SECOND).await {
            Ok(Received::Media(frame)) => {
                let (header, _) = MediaHeader::decode(&frame).map_err(|error| error.to_string())?;
                if header.sender == speaker && header.kind == MediaKind::Audio {
                    heard += 1;
                }
            }
            Ok(Received::Control(ServerMessage::Error(error))) => {
                return Err(format!("disconnected after {heard} of {n} frames: {error:?}"));
            }
            Ok(Received::Control(_)) => {}
            Ok(Received::Closed(frame)) => {
                return Err(format!("closed after {heard} of {n} frames: {frame:?}"));
            }
            Err(error) => return Err(format!("after {heard} of {n} frames: {error:#}")),
        }
    }
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_audio_frames_disconnect_nobody() {
    let relay = relay(&[]);
    let metrics = a_hostile_burst_of_audio_leaves_the_room_alone(&relay).await;
    assert_eq!(
        metric(&metrics, "chinwag_dropped_frames_total{reason=\"frame_too_large\"}"),
        Some(7),
        "the hostile frames were dropped once each, on the way in: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_audio_past_the_queue_budget_is_no_verdict_on_fast_readers() {
    // A relay that lets large audio frames in: the burst reaches the receivers' queues, and
    // only how long audio waits there may count against them, never its bytes.
    let relay = relay(&["--max-audio-frame-bytes", "250000"]);
    let metrics = a_hostile_burst_of_audio_leaves_the_room_alone(&relay).await;
    assert_eq!(
        metric(&metrics, "chinwag_dropped_frames_total{reason=\"frame_too_large\"}"),
        Some(1),
        "only the frame over the limit was dropped on the way in: {metrics}"
    );
    let overflow = metric(&metrics, "chinwag_dropped_frames_total{reason=\"audio_queue_full\"}");
    eprintln!("hostile audio dropped from full receiver queues: {overflow:?}");
}

/// Four listeners read as fast as they can while a hostile member sends audio frames far
/// larger than voice and a speaker talks; every listener hears every word. Returns the
/// relay's metrics afterwards.
async fn a_hostile_burst_of_audio_leaves_the_room_alone(relay: &RelayProcess) -> String {
    let (mut speaker, speaker_welcome) = TestClient::join(&relay.url, "r", "Speaker", None).await.unwrap();
    let mut listeners = Vec::new();
    for name in ["Ada", "Bob", "Carol", "Dan"] {
        listeners.push(TestClient::join(&relay.url, "r", name, None).await.unwrap().0);
    }
    let (mut hostile, _) = TestClient::join(&relay.url, "r", "Hostile", None).await.unwrap();

    // Every listener reads as fast as it can from now on.
    const SPOKEN: usize = 20;
    let hearing: Vec<_> =
        listeners.into_iter().map(|client| tokio::spawn(hear(client, speaker_welcome.id, SPOKEN))).collect();

    // One audio frame larger than a receiver's whole audio queue (256 KiB) but under the
    // message limit (1 MiB), then a few that fit the queue one at a time but not two together.
    hostile.send_binary(media_frame(MediaKind::Audio, 0, 0, &vec![0x11; 300 << 10])).await.unwrap();
    for seq in 1..=6 {
        hostile.send_binary(media_frame(MediaKind::Audio, 0, seq, &vec![0x22; 200 << 10])).await.unwrap();
    }
    // The relay handles a connection's messages in order: once the pong is back, the burst is
    // in the listeners' queues (or dropped), and what follows is the speaker alone.
    hostile.send(&ClientMessage::Ping { client_time_us: 1, received_bytes: None }).await.unwrap();
    loop {
        if let ServerMessage::Pong { .. } = hostile.next_control(5 * SECOND).await.unwrap() {
            break;
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for seq in 0..SPOKEN as u32 {
        tick.tick().await;
        speaker.send_binary(media_frame(MediaKind::Audio, 0, seq, &[0; 80])).await.unwrap();
    }
    let mut still_here = Vec::new();
    for (listener, hearing) in hearing.into_iter().enumerate() {
        match hearing.await.unwrap() {
            Ok(client) => still_here.push(client),
            Err(problem) => panic!("listener {listener} stopped hearing the speaker: {problem}"),
        }
    }

    let (_, metrics) = http_get(relay.addr, "/metrics").await.unwrap();
    assert_eq!(metric(&metrics, "chinwag_errors_sent_total{code=\"too_slow\"}"), Some(0), "{metrics}");
    assert_eq!(metric(&metrics, "chinwag_participants"), Some(6), "{metrics}");
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_takes_the_place_of_its_old_connection_that_only_looks_alive() {
    let relay = relay(&["--max-participants", "2"]);
    let (mut ada, _) = TestClient::join(&relay.url, "r", "Ada", None).await.unwrap();
    // Bob's network changes under him: his old connection goes quiet but stays open as far as
    // the relay can tell, and the room is full.
    let (mut old_bob, old_welcome) = TestClient::join(&relay.url, "r", "Bob", None).await.unwrap();
    assert!(matches!(ada.next_control(5 * SECOND).await.unwrap(), ServerMessage::PeerJoined { .. }));
    let secret = old_welcome.resume.expect("the relay gives each participant a resume secret");

    let mut guesser = TestClient::connect(&relay.url, None).await.unwrap();
    let guess = "0".repeat(secret.len());
    guesser.send(&ClientMessage::Join(join("r", "Bob", Some(&guess)))).await.unwrap();
    let (error, _) = guesser.expect_refusal(5 * SECOND).await.unwrap();
    assert_eq!(error.code, ErrorCode::RoomFull, "a wrong secret replaces nobody");
    let (_elsewhere, _) = {
        let mut client = TestClient::connect(&relay.url, None).await.unwrap();
        let welcome = client.join_with(join("other", "Bob", Some(&secret))).await.unwrap();
        (client, welcome)
    };

    let mut new_bob = TestClient::connect(&relay.url, None).await.unwrap();
    let new_welcome = new_bob.join_with(join("r", "Bob", Some(&secret))).await.expect("Bob is back at once");
    assert_eq!(new_welcome.peers.len(), 1, "{new_welcome:?}");
    assert_ne!(new_welcome.resume.as_deref(), Some(secret.as_str()), "each connection has its own secret");
    assert_eq!(ada.next_control(5 * SECOND).await.unwrap(), ServerMessage::PeerLeft { id: old_welcome.id });
    match ada.next_control(5 * SECOND).await.unwrap() {
        ServerMessage::PeerJoined { peer } => assert_eq!(peer.id, new_welcome.id),
        other => panic!("expected Bob to join again, got {other:?}"),
    }
    let (error, _) = old_bob.expect_refusal(5 * SECOND).await.unwrap();
    assert_eq!(error.code, ErrorCode::Replaced, "{error:?}");
    assert!(error.message.contains("another connection"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_lets_a_newcomer_take_the_place_of_a_member_gone_silent() {
    let relay = relay(&["--max-participants", "2"]);
    let (mut ada, _) = TestClient::join(&relay.url, "r", "Ada", None).await.unwrap();
    // Bob's app was killed with its network, so his connection neither sends nor closes; he
    // starts the app again, which knows no secret of the old connection's.
    let (mut old_bob, old_welcome) = TestClient::join(&relay.url, "r", "Bob", None).await.unwrap();
    let mut refused_while_bob_was_recent = false;
    let started = std::time::Instant::now();
    let new_bob = loop {
        // Ada pings as clients do; only Bob's old connection is silent.
        ada.send(&ClientMessage::Ping { client_time_us: 1, received_bytes: None }).await.unwrap();
        let mut client = TestClient::connect(&relay.url, None).await.unwrap();
        client.send(&ClientMessage::Join(join("r", "Bob", None))).await.unwrap();
        match client.next_control(5 * SECOND).await.unwrap() {
            ServerMessage::Welcome(welcome) => break welcome,
            ServerMessage::Error(error) => {
                assert_eq!(error.code, ErrorCode::RoomFull, "{error:?}");
                refused_while_bob_was_recent = true;
            }
            other => panic!("expected welcome or room_full, got {other:?}"),
        }
        assert!(started.elapsed() < 20 * SECOND, "Bob was kept out for {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("Bob was back after {:?}", started.elapsed());
    assert!(refused_while_bob_was_recent, "a member heard from recently keeps its place");
    assert_ne!(new_bob.id, old_welcome.id);
    let (error, _) = old_bob.expect_refusal(5 * SECOND).await.unwrap();
    assert_eq!(error.code, ErrorCode::Timeout, "{error:?}");
    let mut ada_left_in = true;
    while let Ok(message) = ada.next_control(Duration::from_millis(300)).await {
        ada_left_in &= !matches!(message, ServerMessage::Error(_));
    }
    assert!(ada_left_in, "Ada, who pinged, kept her place");
}

/// A WebSocket opened by hand on `/v1`, to send frames no WebSocket library would.
async fn raw_websocket(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = "GET /v1 HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// One client frame: `first` is the FIN bit and opcode; masked with a zero key, so the
/// payload goes as it is.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![first, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

/// Writes `flood` (as much as the relay takes), then reads until the relay closes the
/// connection; false if it is still open after `within`.
async fn flood_until_closed(tcp: &mut TcpStream, flood: &[u8], within: Duration) -> bool {
    let _ = tokio::time::timeout(within, tcp.write_all(flood)).await;
    let mut sink = vec![0; 64 << 10];
    let closed = async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, closed).await.is_ok()
}

const PING: u8 = 0x89;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_pings_before_joining_is_rate_limited() {
    let relay = relay(&[]);
    let mut tcp = raw_websocket(relay.addr).await;
    let flood = client_frame(PING, b"").repeat(100_000);
    assert!(flood_until_closed(&mut tcp, &flood, 4 * SECOND).await, "the flooding connection stays open");
    let (_, metrics) = http_get(relay.addr, "/metrics").await.unwrap();
    assert_eq!(metric(&metrics, "chinwag_errors_sent_total{code=\"rate_limited\"}"), Some(1), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_never_ends_is_rate_limited() {
    let relay = relay(&[]);
    let mut tcp = raw_websocket(relay.addr).await;
    let join = r#"{"type":"join","version":1,"room":"r","name":"Flood"}"#;
    tcp.write_all(&client_frame(0x81, join.as_bytes())).await.unwrap();
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("welcome") {
        let mut chunk = [0; 1024];
        let n = tokio::time::timeout(5 * SECOND, tcp.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed before welcome");
        received.extend_from_slice(&chunk[..n]);
    }
    // A text message that is never finished: its first frame without FIN, then endless empty
    // continuation frames, none of which is a message the relay would ever count.
    let mut flood = client_frame(0x01, b"{");
    flood.extend(client_frame(0x00, b"").repeat(100_000));
    assert!(flood_until_closed(&mut tcp, &flood, 4 * SECOND).await, "the flooding connection stays open");
    let (_, metrics) = http_get(relay.addr, "/metrics").await.unwrap();
    assert_eq!(metric(&metrics, "chinwag_errors_sent_total{code=\"rate_limited\"}"), Some(1), "{metrics}");
    assert_eq!(metric(&metrics, "chinwag_participants"), Some(0), "{metrics}");
}

/// Another machine, as far as the relay can tell: on Linux all of 127.0.0.0/8 is loopback.
#[cfg(target_os = "linux")]
fn machine(n: u8) -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, n])
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_machine_cannot_hold_the_relay_full_and_keep_everyone_else_out() {
    // A small connection limit stands for the default 1000, which one process can fill as
    // easily; the per-source limits are the defaults. The long join timeout keeps idle
    // connections open for as long as the test needs them.
    let relay = relay(&["--max-connections", "100", "--join-timeout", "60"]);
    let attacker = machine(2);
    let refused = |metrics: &str, reason: &str| {
        metric(metrics, &format!("chinwag_connections_refused_total{{reason=\"{reason}\"}}")).unwrap_or(0)
    };

    // Connections that never even send a request.
    let mut idle = Vec::new();
    for _ in 0..150 {
        idle.push(connect_tcp_from(&relay.url, attacker).await.unwrap());
    }
    let people = everyone_gets_in(&relay, "before").await;
    let (_, metrics) = http_get(relay.addr, "/metrics").await.unwrap();
    assert!(refused(&metrics, "source_handshakes") > 0, "{metrics}");
    assert!(metric(&metrics, "chinwag_connections").unwrap() <= 16 + 5 + 1, "{metrics}");
    drop((idle, people));
    let started = std::time::Instant::now();
    loop {
        let (_, metrics) = http_get(relay.addr, "/metrics").await.unwrap();
        if metric(&metrics, "chinwag_connections") == Some(1) {
            break;
        }
        assert!(started.elapsed() < 10 * SECOND, "the idle connections stay: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Connections that join, each its own room.
    let mut joined = Vec::new();
    for i in 0..60 {
        let Ok(mut client) = TestClient::connect_from(&relay.url, attacker).await else { continue };
        if client.join_here(&format!("squat-{i}"), "Squatter", None).await.is_ok() {
            joined.push(client);
        }
    }
    assert_eq!(joined.len(), 50, "one machine holds as many joined connections as the default allows");
    let _people = everyone_gets_in(&relay, "after").await;
    let (status, _) = http_get(relay.addr, "/healthz").await.unwrap();
    assert_eq!(status, 200);
    let (_, metrics) = http_get(relay.addr, "/metrics").await.unwrap();
    assert!(refused(&metrics, "source_connections") >= 10, "{metrics}");
}

/// Five people from this machine join one room.
#[cfg(target_os = "linux")]
async fn everyone_gets_in(relay: &RelayProcess, room: &str) -> Vec<TestClient> {
    let mut people = Vec::new();
    for name in ["Ada", "Bob", "Carol", "Dan", "Eve"] {
        let (client, _) = TestClient::join(&relay.url, room, name, None)
            .await
            .unwrap_or_else(|error| panic!("{name} was kept out: {error:#}"));
        people.push(client);
    }
    people
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answer_while_the_relay_is_full() {
    let relay = relay(&["--max-connections", "20", "--join-timeout", "60"]);
    let mut idle = Vec::new();
    for n in [2, 3] {
        for _ in 0..10 {
            idle.push(connect_tcp_from(&relay.url, machine(n)).await.unwrap());
        }
    }
    // The relay counts connections as it accepts them, which may trail the connects a little.
    let started = std::time::Instant::now();
    loop {
        let (status, body) = http_get(relay.addr, "/healthz").await.unwrap();
        assert_eq!(status, 200, "{body}");
        if body.contains("full") {
            break;
        }
        assert!(started.elapsed() < 10 * SECOND, "never full: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, metrics) = http_get(relay.addr, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{metrics}");
    assert_eq!(metric(&metrics, "chinwag_connections"), Some(20), "{metrics}");
    let refused = TestClient::connect(&relay.url, None).await.err().expect("a call is refused while full");
    assert!(format!("{refused:#}").contains("503"), "{refused:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_from_elsewhere_cannot_join_a_call() {
    let relay = relay(&[]);
    let (_ada, _) = TestClient::join(&relay.url, "lobby", "Ada", None).await.unwrap();
    let refused = TestClient::connect_with_origin(&relay.url, "https://evil.example").await;
    let refused = refused.err().expect("a page from another site is refused");
    assert!(format!("{refused:#}").contains("403"), "{refused:#}");
    let own = format!("http://{}", relay.addr);
    let mut own_page = TestClient::connect_with_origin(&relay.url, &own).await.unwrap();
    own_page.join_here("lobby", "Own page", None).await.expect("the relay's own origin may join");
    let (_, metrics) = http_get(relay.addr, "/metrics").await.unwrap();
    assert_eq!(
        metric(&metrics, "chinwag_connections_refused_total{reason=\"origin\"}"),
        Some(1),
        "{metrics}"
    );

    let relay = self::relay(&["--allow-origin", "https://call.example.com"]);
    let mut allowed = TestClient::connect_with_origin(&relay.url, "https://call.example.com").await.unwrap();
    allowed.join_here("lobby", "Web app", None).await.expect("an allowed origin may join");
    assert!(TestClient::connect_with_origin(&relay.url, "https://evil.example").await.is_err());
}

/// Tries `password` for `room` from `client`; the relay's answer: welcome (`Ok`) or an error.
async fn try_password(
    mut client: TestClient,
    room: &str,
    password: &str,
) -> Result<TestClient, chinwag_proto::ErrorMessage> {
    let join = Join { password: Some(password.into()), ..join(room, "Guesser", None) };
    client.send(&ClientMessage::Join(join)).await.unwrap();
    match client.next_control(5 * SECOND).await {
        Ok(ServerMessage::Welcome(_)) => Ok(client),
        Ok(ServerMessage::Error(error)) => Err(error),
        other => panic!("expected welcome or an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_from_one_machine_is_slowed_and_told_when_to_try_again() {
    let relay = relay(&[]);
    let (_owner, _) = TestClient::join(&relay.url, "locked", "Owner", Some("correct horse")).await.unwrap();
    let mut limited = None;
    for guess in 0..25 {
        let client = TestClient::connect(&relay.url, None).await.unwrap();
        match try_password(client, "locked", &format!("guess {guess}")).await {
            Err(error) if error.code == ErrorCode::WrongPassword => {}
            Err(error) if error.code == ErrorCode::RateLimited => {
                limited = Some((guess, error));
                break;
            }
            other => panic!("guess {guess}: {:?}", other.err()),
        }
    }
    let (guesses, error) = limited.expect("25 guesses in a row were all answered");
    eprintln!("rate limited after {guesses} wrong passwords: {error:?}");
    assert!(guesses >= 5, "the first few mistakes cost nothing: limited after {guesses}");
    assert!(error.message.contains("wrong passwords") && error.message.contains("try again in"), "{error:?}");
    assert!(error.retry_after_s.is_some_and(|seconds| seconds >= 1), "{error:?}");

    #[cfg(target_os = "linux")]
    {
        let honest = TestClient::connect_from(&relay.url, machine(2)).await.unwrap();
        let joined = try_password(honest, "locked", "correct horse").await;
        assert!(joined.is_ok(), "another machine is not slowed: {:?}", joined.err());
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_at_one_room_from_many_machines_is_slowed() {
    let relay = relay(&[]);
    let (_owner, _) = TestClient::join(&relay.url, "locked", "Owner", Some("correct horse")).await.unwrap();
    // Each machine makes only the guesses that cost it nothing.
    let mut limited = None;
    'machines: for n in 2..=60 {
        for guess in 0..5 {
            let client = TestClient::connect_from(&relay.url, machine(n)).await.unwrap();
            match try_password(client, "locked", &format!("guess {n}.{guess}")).await {
                Err(error) if error.code == ErrorCode::WrongPassword => {}
                Err(error) if error.code == ErrorCode::RateLimited => {
                    limited = Some((n, error));
                    break 'machines;
                }
                other => panic!("machine {n}, guess {guess}: {:?}", other.err()),
            }
        }
    }
    let (machine_n, error) = limited.expect("295 guesses at one room were all answered");
    eprintln!("rate limited at machine {machine_n}: {error:?}");
    assert!(error.message.contains("for room \"locked\""), "{error:?}");
    let (_, metrics) = http_get(relay.addr, "/metrics").await.unwrap();
    assert!(
        metric(&metrics, "chinwag_errors_sent_total{code=\"wrong_password\"}").unwrap() >= 30,
        "{metrics}"
    );
}

/// Runs `chinwag-relay token ARGS`; its output, or its error.
fn mint<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<String, String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chinwag-relay"))
        .arg("token")
        .args(args)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    if output.status.success() { Ok(text(&output.stdout)) } else { Err(text(&output.stderr)) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_required_only_token_holders_join_and_nobody_squats_a_room() {
    let dir = std::env::temp_dir().join(format!("chinwag-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "7f".repeat(32)).unwrap();
    let secret = secret.to_str().unwrap();
    let with = |args: &[&'static str]| -> Vec<String> {
        args.iter().copied().chain(["--token-secret-file", secret]).map(str::to_owned).collect()
    };
    let ada_token = mint(&with(&["--room", "standup", "--name", "Ada", "--ttl", "1h"])).unwrap();
    let room_token = mint(&with(&["--room", "standup"])).unwrap();
    let short_token = mint(&with(&["--room", "standup", "--ttl", "1s"])).unwrap();
    let error = mint(&["--room", "standup"]).unwrap_err();
    assert!(error.contains("--token-secret-file"), "{error}");
    let error = mint(&with(&["--room", "standup", "--ttl", "soon"])).unwrap_err();
    assert!(error.contains("--ttl must look like"), "{error}");

    let relay = relay(&["--require-token", "--token-secret-file", secret]);
    let joining = |room: &str, name: &str, token: Option<&str>| Join {
        token: token.map(Into::into),
        ..join(room, name, None)
    };
    let refused = |join: Join| async {
        let mut client = TestClient::connect(&relay.url, None).await.unwrap();
        client.send(&ClientMessage::Join(join)).await.unwrap();
        let (error, _) = client.expect_refusal(5 * SECOND).await.unwrap();
        assert_eq!(error.code, ErrorCode::Unauthorized, "{error:?}");
        error.message
    };
    let message = refused(joining("standup", "Squatter", None)).await;
    assert!(message.contains("only joins with a token"), "an empty room cannot be squatted: {message}");
    let message = refused(joining("standup", "Eve", Some(&ada_token))).await;
    assert!(message.contains("for the name \"Ada\""), "{message}");
    let message = refused(joining("elsewhere", "Ada", Some(&ada_token))).await;
    assert!(message.contains("for room \"standup\""), "{message}");
    // The grant of one token under the signature of another.
    let (room_grant, _) = room_token.rsplit_once('.').unwrap();
    let (_, ada_signature) = ada_token.rsplit_once('.').unwrap();
    let forged = format!("{room_grant}.{ada_signature}");
    let message = refused(joining("standup", "Mallory", Some(&forged))).await;
    assert!(message.contains("not signed by this relay"), "{message}");

    let mut ada = TestClient::connect(&relay.url, None).await.unwrap();
    ada.join_with(joining("standup", "Ada", Some(&ada_token))).await.expect("Ada's token admits her");
    let mut bob = TestClient::connect(&relay.url, None).await.unwrap();
    bob.join_with(joining("standup", "Bob", Some(&room_token))).await.expect("a room token admits any name");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let message = refused(joining("standup", "Late", Some(&short_token))).await;
    assert!(message.contains("expired"), "{message}");
    std::fs::remove_dir_all(dir).unwrap();
}
