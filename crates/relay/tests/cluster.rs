//! Relays clustered over NATS, as clients see them: real `chinwag-relay` processes sharing a
//! real `nats-server -js`, real WebSocket clients on either relay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chinwag_e2e::{
    NatsServer, Received, RelayProcess, TestClient, ThrottledProxy, http_get, media_frame, metric,
    process_clock_us,
};
use chinwag_proto::{
    ClientMessage, ErrorCode, ErrorMessage, Join, MediaHeader, MediaKind, ParticipantId, Peer, ServerMessage,
    StateUpdate,
};

const SECOND: Duration = Duration::from_secs(1);

/// A NATS server for one test, and the directory that holds its store and log.
struct Cluster {
    nats: NatsServer,
    dir: PathBuf,
}

impl Cluster {
    /// `None` when the test is to be skipped (see [`NatsServer::start_for_test`]).
    fn start(name: &str) -> Option<Cluster> {
        let dir = std::env::temp_dir().join(format!("chinwag-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let nats = NatsServer::start_for_test(&dir, name)?;
        Some(Cluster { nats, dir })
    }

    /// A relay in this cluster named `node`, with `extra` flags.
    fn relay(&self, node: &str, extra: &[&str]) -> RelayProcess {
        let url = self.nats.url();
        let mut args = vec!["--cluster", url.as_str(), "--node-id", node];
        args.extend_from_slice(extra);
        tokio::task::block_in_place(|| {
            RelayProcess::start(Path::new(env!("CARGO_BIN_EXE_chinwag-relay")), &args).unwrap_or_else(
                |error| panic!("relay {node} starts: {error:#}\nnats log:\n{}", self.nats.log()),
            )
        })
    }
}

impl Cluster {
    /// Relays "a" and "b", both with `extra`, once each is connected and sees the other.
    async fn pair(&self, extra: &[&str]) -> (RelayProcess, RelayProcess) {
        let (a, b) = (self.relay("a", extra), self.relay("b", extra));
        until_formed(&[&a, &b], 2).await;
        (a, b)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One client and its view of its room, kept up to date from the presence messages it reads.
struct View {
    client: TestClient,
    id: ParticipantId,
    name: String,
    peers: BTreeMap<ParticipantId, Peer>,
    /// Presence messages that made no sense against the view: a join of someone already
    /// present, a leave or state of someone absent, an error. A person would see a duplicate
    /// or stale tile.
    surprises: Vec<String>,
}

impl View {
    async fn join(url: &str, room: &str, name: &str, password: Option<&str>) -> View {
        let (client, welcome) = TestClient::join(url, room, name, password)
            .await
            .unwrap_or_else(|error| panic!("{name} joins {room} on {url}: {error:#}"));
        assert_eq!(welcome.room, room);
        let peers = welcome.peers.into_iter().map(|peer| (peer.id, peer)).collect();
        View { client, id: welcome.id, name: name.to_owned(), peers, surprises: Vec::new() }
    }

    fn apply(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::PeerJoined { peer } => {
                if let Some(old) = self.peers.insert(peer.id, peer.clone()) {
                    self.surprises.push(format!("peer_joined {peer:?} while {old:?} was present"));
                }
            }
            ServerMessage::PeerLeft { id } => {
                if self.peers.remove(&id).is_none() {
                    self.surprises.push(format!("peer_left {id:?}, who was not present"));
                }
            }
            ServerMessage::PeerState(state) => match self.peers.get_mut(&state.id) {
                Some(peer) => (peer.muted, peer.camera) = (state.muted, state.camera),
                None => self.surprises.push(format!("peer_state {state:?} of someone not present")),
            },
            ServerMessage::Pong { .. } => {}
            other => self.surprises.push(format!("unexpected {other:?}")),
        }
    }

    /// Reads presence until `done` holds for the peers; panics with the view after `within`.
    async fn until(
        &mut self,
        what: &str,
        within: Duration,
        done: impl Fn(&BTreeMap<ParticipantId, Peer>) -> bool,
    ) -> Duration {
        let started = Instant::now();
        let deadline = started + within;
        while !done(&self.peers) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.client.next(left).await {
                Ok(Received::Control(message)) => self.apply(message),
                Ok(Received::Media(_)) => {}
                Ok(Received::Closed(frame)) => {
                    panic!("{} was closed ({frame:?}) waiting for {what}", self.name)
                }
                Err(_) => panic!(
                    "{} did not see {what} within {within:?}; it sees {:?}; surprises {:?}",
                    self.name, self.peers, self.surprises
                ),
            }
        }
        started.elapsed()
    }

    /// Waits until the peers are exactly `names`.
    async fn until_names(&mut self, names: &[&str], within: Duration) -> Duration {
        let want: BTreeSet<String> = names.iter().map(|name| (*name).to_owned()).collect();
        self.until(&format!("exactly {want:?}"), within, |peers| {
            peers.len() == want.len()
                && peers.values().map(|peer| peer.name.clone()).collect::<BTreeSet<_>>() == want
        })
        .await
    }

    fn peer(&self, name: &str) -> &Peer {
        self.peers
            .values()
            .find(|peer| peer.name == name)
            .unwrap_or_else(|| panic!("{name} in {:?}", self.peers))
    }

    fn assert_no_surprises(&self) {
        assert!(
            self.surprises.is_empty(),
            "{} got presence that made no sense: {:?}",
            self.name,
            self.surprises
        );
    }
}

fn audio_payload(from: &str, seq: u32) -> Vec<u8> {
    format!("{from} audio {seq}").into_bytes()
}

fn video_payload(from: &str, seq: u32) -> Vec<u8> {
    let mut payload = format!("{from} video {seq} ").into_bytes();
    payload.resize(2000, 0x5a);
    payload
}

const AUDIO_FRAMES: u32 = 50;
const VIDEO_EVERY: u32 = 10;

/// Sends one second of media as `from`: 50 audio frames 20 ms apart and a video frame with
/// every tenth, each with a forged sender id that the relay must overwrite.
async fn send_media(client: &mut TestClient, from: &str) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for seq in 0..AUDIO_FRAMES {
        tick.tick().await;
        client
            .send_binary(media_frame(MediaKind::Audio, 0xdead_beef, seq, &audio_payload(from, seq)))
            .await
            .unwrap();
        if seq % VIDEO_EVERY == VIDEO_EVERY - 1 {
            let video_seq = seq / VIDEO_EVERY;
            client
                .send_binary(media_frame(
                    MediaKind::Video,
                    0xdead_beef,
                    video_seq,
                    &video_payload(from, video_seq),
                ))
                .await
                .unwrap();
        }
    }
}

/// Reads what `receiver` gets of [`send_media`] from `from` (id `sender`): every audio frame
/// once, in order, and the video frames in order, the last one surely (an older one may be
/// replaced by a newer one under backpressure, never the newest). Then nothing more.
async fn expect_media(receiver: &mut View, from: &str, sender: ParticipantId) {
    let (mut audio, mut video) = (Vec::new(), Vec::new());
    let last_video = AUDIO_FRAMES / VIDEO_EVERY - 1;
    let deadline = Instant::now() + 5 * SECOND;
    let mut complete_at = None;
    loop {
        let now = Instant::now();
        if complete_at.is_none() && audio.len() == AUDIO_FRAMES as usize && video.last() == Some(&last_video)
        {
            // Complete: keep reading a little to catch duplicates and echoes.
            complete_at = Some(now);
        }
        let until = match complete_at {
            Some(at) => at + Duration::from_millis(300),
            None => deadline,
        };
        if now >= until {
            break;
        }
        let received = match receiver.client.next(until - now).await {
            Ok(received) => received,
            Err(_) => break,
        };
        match received {
            Received::Control(message) => receiver.apply(message),
            Received::Closed(frame) => {
                panic!("{} was closed ({frame:?}) while receiving media", receiver.name)
            }
            Received::Media(bytes) => {
                let (header, body) = MediaHeader::decode(&bytes).unwrap();
                assert_eq!(
                    header.sender, sender,
                    "{} got a frame from {:?} (seq {:?}, {:?}) while expecting only {from}'s ({sender:?})",
                    receiver.name, header.sender, header.seq, header.kind
                );
                match header.kind {
                    MediaKind::Audio => {
                        assert_eq!(body, audio_payload(from, header.seq.0), "{}: audio body", receiver.name);
                        audio.push(header.seq.0);
                    }
                    MediaKind::Video => {
                        assert_eq!(body, video_payload(from, header.seq.0), "{}: video body", receiver.name);
                        video.push(header.seq.0);
                    }
                }
            }
        }
    }
    let want: Vec<u32> = (0..AUDIO_FRAMES).collect();
    assert_eq!(audio, want, "{} got {from}'s audio frames (by seq) once each, in order", receiver.name);
    assert!(
        video.windows(2).all(|pair| pair[0] < pair[1]) && video.last() == Some(&last_video),
        "{} got {from}'s video frames {video:?}: in order, no repeats, ending with {last_video}",
        receiver.name
    );
}

async fn nothing_arrives(client: &mut TestClient, within: Duration) -> Result<(), String> {
    match client.next(within).await {
        Err(error) if error.to_string().contains("nothing received") => Ok(()),
        Err(error) => Err(format!("{error:#}")),
        Ok(received) => Err(format!("{received:?}")),
    }
}

/// Joins and expects to be refused; returns the error and the close code.
async fn refused(url: &str, room: &str, name: &str, password: Option<&str>) -> (ErrorMessage, Option<u16>) {
    let mut client = TestClient::connect(url, None).await.unwrap();
    client
        .send(&ClientMessage::Join(Join {
            version: 1,
            room: room.into(),
            name: name.into(),
            password: password.map(Into::into),
            resume: None,
            token: None,
        }))
        .await
        .unwrap();
    client
        .expect_refusal(5 * SECOND)
        .await
        .unwrap_or_else(|error| panic!("{name} joining {room} on {url} was not refused: {error:#}"))
}

/// Polls the relay's `/metrics` until `sample` reads `want`; returns how long that took.
async fn until_metric(relay: &RelayProcess, sample: &str, want: u64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (_, text) = http_get(relay.addr, "/metrics").await.unwrap();
        let value = metric(&text, sample);
        if value == Some(want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{sample} on {} read {value:?}, not {want}, for {within:?}:\n{text}",
            relay.url
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/healthz` until it answers `status` with a body starting `prefix`.
async fn until_health(relay: &RelayProcess, status: u16, prefix: &str, within: Duration) -> String {
    let started = Instant::now();
    loop {
        let (got, body) = http_get(relay.addr, "/healthz").await.unwrap();
        if got == status && body.starts_with(prefix) {
            return body;
        }
        assert!(
            started.elapsed() < within,
            "/healthz on {} answered {got} {body:?} for {within:?}, not {status} {prefix}...",
            relay.url
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every relay is connected and sees `nodes` live relays.
async fn until_formed(relays: &[&RelayProcess], nodes: u64) {
    for relay in relays {
        until_metric(relay, "chinwag_cluster_connected", 1, 10 * SECOND).await;
        until_metric(relay, "chinwag_cluster_nodes", nodes, 10 * SECOND).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_and_presence_agree_on_both_relays() {
    let Some(cluster) = Cluster::start("roster") else { return };
    let (a, b) = cluster.pair(&[]).await;

    let mut ada = View::join(&a.url, "standup", "Ada", None).await;
    let mut bob = View::join(&a.url, "standup", "Bob", None).await;
    let mut carol = View::join(&b.url, "standup", "Carol", None).await;
    carol.until_names(&["Ada", "Bob"], 5 * SECOND).await;
    ada.until_names(&["Bob", "Carol"], 5 * SECOND).await;
    bob.until_names(&["Ada", "Carol"], 5 * SECOND).await;
    let ids = BTreeSet::from([ada.id, bob.id, carol.id]);
    assert_eq!(ids.len(), 3, "participant ids are unique across relays: {ids:?}");
    assert_eq!((carol.peer("Ada").id, carol.peer("Bob").id), (ada.id, bob.id), "B sees A's real ids");
    assert_eq!(ada.peer("Carol").id, carol.id, "A sees B's real id");

    // State changes cross both ways.
    carol.client.send(&ClientMessage::State(StateUpdate { muted: true, camera: true })).await.unwrap();
    let carol_id = carol.id;
    for view in [&mut ada, &mut bob] {
        view.until("Carol muted with camera on", 5 * SECOND, |peers| {
            peers.get(&carol_id).is_some_and(|peer| peer.muted && peer.camera)
        })
        .await;
    }
    ada.client.send(&ClientMessage::State(StateUpdate { muted: false, camera: true })).await.unwrap();
    let ada_id = ada.id;
    for view in [&mut bob, &mut carol] {
        view.until("Ada's camera on", 5 * SECOND, |peers| {
            peers.get(&ada_id).is_some_and(|peer| !peer.muted && peer.camera)
        })
        .await;
    }

    // A newcomer on B sees everyone's current state in its welcome, A's participants too.
    let mut dan = View::join(&b.url, "standup", "Dan", None).await;
    dan.until_names(&["Ada", "Bob", "Carol"], 5 * SECOND).await;
    assert!(dan.peer("Ada").camera && !dan.peer("Ada").muted, "{:?}", dan.peers);
    assert!(dan.peer("Carol").camera && dan.peer("Carol").muted, "{:?}", dan.peers);

    // Joins racing on both relays still get distinct ids.
    let (e1, e2, f1, f2) = tokio::join!(
        View::join(&a.url, "standup", "Erin", None),
        View::join(&a.url, "standup", "Eli", None),
        View::join(&b.url, "standup", "Fay", None),
        View::join(&b.url, "standup", "Finn", None),
    );
    let ids: BTreeSet<_> = [ada.id, bob.id, carol.id, dan.id, e1.id, e2.id, f1.id, f2.id].into();
    assert_eq!(ids.len(), 8, "participant ids are unique across relays, even for racing joins: {ids:?}");
    let everyone = ["Ada", "Bob", "Carol", "Dan", "Erin", "Eli", "Fay", "Finn"];
    let others = |me: &str| everyone.iter().copied().filter(|name| *name != me).collect::<Vec<_>>();
    ada.until_names(&others("Ada"), 5 * SECOND).await;
    dan.until_names(&others("Dan"), 5 * SECOND).await;
    for view in [&ada, &dan] {
        let seen: BTreeSet<_> = view.peers.keys().copied().chain([view.id]).collect();
        assert_eq!(seen, ids, "{} sees the ids the others were given", view.name);
    }
    drop((e1, e2, f1, f2));
    ada.until_names(&["Bob", "Carol", "Dan"], 5 * SECOND).await;

    // Leaving is announced across relays: Carol leaves B, Ada leaves A.
    carol.client.close().await;
    ada.until_names(&["Bob", "Dan"], 5 * SECOND).await;
    bob.until_names(&["Ada", "Dan"], 5 * SECOND).await;
    dan.until_names(&["Ada", "Bob"], 5 * SECOND).await;
    ada.client.close().await;
    dan.until_names(&["Bob"], 5 * SECOND).await;
    bob.until_names(&["Dan"], 5 * SECOND).await;
    for view in [&bob, &dan] {
        view.assert_no_surprises();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_crosses_relays_both_ways_to_its_room_only() {
    let Some(cluster) = Cluster::start("media") else { return };
    let (a, b) = cluster.pair(&[]).await;

    let mut ada = View::join(&a.url, "r", "Ada", None).await;
    let mut carol = View::join(&a.url, "r", "Carol", None).await;
    let mut bob = View::join(&b.url, "r", "Bob", None).await;
    let mut eve = View::join(&a.url, "elsewhere", "Eve", None).await;
    let mut dan = View::join(&b.url, "elsewhere", "Dan", None).await;
    ada.until_names(&["Carol", "Bob"], 5 * SECOND).await;
    carol.until_names(&["Ada", "Bob"], 5 * SECOND).await;
    bob.until_names(&["Ada", "Carol"], 5 * SECOND).await;
    eve.until_names(&["Dan"], 5 * SECOND).await;
    dan.until_names(&["Eve"], 5 * SECOND).await;

    // A to B (and to A's own), then B to A.
    send_media(&mut ada.client, "Ada").await;
    expect_media(&mut bob, "Ada", ada.id).await;
    expect_media(&mut carol, "Ada", ada.id).await;
    if let Err(got) = nothing_arrives(&mut ada.client, Duration::from_millis(300)).await {
        panic!("the sender got something back from its own media (an echo through the cluster?): {got}");
    }
    send_media(&mut bob.client, "Bob").await;
    expect_media(&mut ada, "Bob", bob.id).await;
    expect_media(&mut carol, "Bob", bob.id).await;
    if let Err(got) = nothing_arrives(&mut bob.client, Duration::from_millis(300)).await {
        panic!("the sender got something back from its own media (an echo through the cluster?): {got}");
    }
    for (view, relay) in [(&mut dan, "B"), (&mut eve, "A")] {
        if let Err(got) = nothing_arrives(&mut view.client, Duration::from_millis(300)).await {
            panic!("{} in another room on relay {relay} received {got}", view.name);
        }
    }

    let (_, a_metrics) = http_get(a.addr, "/metrics").await.unwrap();
    let (_, b_metrics) = http_get(b.addr, "/metrics").await.unwrap();
    let count = |text: &str, sample: &str| {
        metric(text, sample).unwrap_or_else(|| panic!("no {sample} in /metrics:\n{text}"))
    };
    let n_video = u64::from(AUDIO_FRAMES / VIDEO_EVERY);
    for (text, relay) in [(&a_metrics, "A"), (&b_metrics, "B")] {
        assert_eq!(count(text, "chinwag_cluster_connected"), 1, "relay {relay}");
        assert_eq!(count(text, "chinwag_cluster_nodes"), 2, "relay {relay}");
        for (family, kind, at_least) in [
            ("published", "audio", u64::from(AUDIO_FRAMES)),
            ("published", "video", 1),
            ("received", "audio", u64::from(AUDIO_FRAMES)),
            ("received", "video", 1),
        ] {
            let sample = format!("chinwag_cluster_{family}_frames_total{{kind=\"{kind}\"}}");
            let value = count(text, &sample);
            assert!(value >= at_least, "relay {relay}: {sample} {value}, expected at least {at_least}");
            if kind == "video" {
                assert!(value <= n_video, "relay {relay}: {sample} {value}, but only {n_video} were sent");
            }
        }
        assert!(
            text.contains("chinwag_cluster_dropped_frames_total"),
            "relay {relay} has no chinwag_cluster_dropped_frames_total:\n{text}"
        );
    }
    for view in [&ada, &bob, &carol, &dan, &eve] {
        view.assert_no_surprises();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_room_size_hold_across_relays() {
    let Some(cluster) = Cluster::start("limits") else { return };
    let (a, b) = cluster.pair(&["--max-participants", "2"]).await;

    let mut ada = View::join(&a.url, "locked", "Ada", Some("hunter2")).await;
    for (url, relay) in [(&b.url, "B"), (&a.url, "A")] {
        for password in [Some("hunter3"), None] {
            let (error, close) = refused(url, "locked", "Eve", password).await;
            assert_eq!(
                error.code,
                ErrorCode::WrongPassword,
                "relay {relay}, password {password:?}: {error:?}"
            );
            assert!(error.message.contains("password"), "{}", error.message);
            assert!(!error.message.contains("hunter2"), "the password is never echoed");
            assert_eq!(close, Some(1008), "relay {relay}");
        }
    }

    let mut bob = View::join(&b.url, "locked", "Bob", Some("hunter2")).await;
    bob.until_names(&["Ada"], 5 * SECOND).await;
    ada.until_names(&["Bob"], 5 * SECOND).await;
    for (url, relay) in [(&a.url, "A"), (&b.url, "B")] {
        let (error, close) = refused(url, "locked", "Carl", Some("hunter2")).await;
        assert_eq!(error.code, ErrorCode::RoomFull, "relay {relay}: one on each relay fills a room of 2");
        assert!(error.message.contains("full"), "{}", error.message);
        assert_eq!(close, Some(1013), "relay {relay}");
    }

    // The place Bob leaves on B is free again, for a join on A too.
    bob.client.close().await;
    ada.until_names(&[], 5 * SECOND).await;
    let mut carl = View::join(&a.url, "locked", "Carl", Some("hunter2")).await;
    carl.until_names(&["Ada"], 5 * SECOND).await;

    // The room and its password end with its last participant, cluster-wide.
    carl.client.close().await;
    ada.until_names(&[], 5 * SECOND).await;
    ada.assert_no_surprises();
    ada.client.close().await;
    let started = Instant::now();
    loop {
        match TestClient::join(&b.url, "locked", "Dora", Some("new password")).await {
            Ok(_) => break,
            Err(error) => assert!(
                started.elapsed() < 5 * SECOND,
                "the emptied room still refuses a new password on B after 5 s: {error:#}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relays_participants_leave_the_others_rooms() {
    let Some(cluster) = Cluster::start("node-death") else { return };
    let (a, b) = cluster.pair(&["--max-participants", "2"]).await;

    let mut ada = View::join(&a.url, "r", "Ada", None).await;
    let mut bob = View::join(&b.url, "r", "Bob", None).await;
    ada.until_names(&["Bob"], 5 * SECOND).await;
    bob.until_names(&["Ada"], 5 * SECOND).await;

    // SIGKILL: relay B says nothing to anyone; only its heartbeats stop.
    tokio::task::block_in_place(|| drop(b));
    let took = ada.until_names(&[], 8 * SECOND).await;
    eprintln!("Bob's peer_left reached Ada {took:?} after relay B was killed");
    until_metric(&a, "chinwag_cluster_nodes", 1, 3 * SECOND).await;

    // Bob's place is free: the room of 2 takes a newcomer, who sees only Ada.
    let mut carol = View::join(&a.url, "r", "Carol", None).await;
    carol.until_names(&["Ada"], 5 * SECOND).await;
    ada.until_names(&["Carol"], 5 * SECOND).await;
    ada.assert_no_surprises();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_with_sigterm_lets_its_participants_go_at_once() {
    let Some(cluster) = Cluster::start("goodbye") else { return };
    // A waits 10 s before it takes a silent relay for dead: only B's own goodbye explains a
    // quick leave.
    let a = cluster.relay("a", &["--cluster-dead-after", "10"]);
    let mut b = cluster.relay("b", &[]);
    until_formed(&[&a, &b], 2).await;
    let mut ada = View::join(&a.url, "r", "Ada", None).await;
    let mut bob = View::join(&b.url, "r", "Bob", None).await;
    ada.until_names(&["Bob"], 5 * SECOND).await;
    bob.until_names(&["Ada"], 5 * SECOND).await;

    let stopped = Instant::now();
    let status = tokio::task::block_in_place(|| b.terminate(10 * SECOND)).unwrap();
    assert!(status.success(), "relay B exits cleanly on SIGTERM: {status}");
    ada.until_names(&[], 3 * SECOND).await;
    eprintln!("Bob left Ada's room {:?} after SIGTERM to relay B", stopped.elapsed());
    until_metric(&a, "chinwag_cluster_nodes", 1, 2 * SECOND).await;
    ada.assert_no_surprises();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_relay_that_died_unwatched_do_not_haunt_the_room() {
    let Some(cluster) = Cluster::start("ghosts") else { return };
    // Relay B dies with Bob in the room while no other relay watches it: his member stays in
    // the room's record, password and all.
    let b = cluster.relay("b", &["--max-participants", "2"]);
    until_formed(&[&b], 1).await;
    let bob = View::join(&b.url, "r", "Bob", Some("pw")).await;
    tokio::task::block_in_place(|| drop(b));
    drop(bob);

    // Relay A starts afterwards and has never heard of B. Right after it connects it cannot
    // tell a dead relay from a slow one, so Ada may see Bob at first; he must go within the
    // grace period, and the room's password and place must follow.
    let a = cluster.relay("a", &["--max-participants", "2"]);
    until_formed(&[&a], 1).await;
    let mut ada = View::join(&a.url, "r", "Ada", Some("pw")).await;
    let took = ada.until_names(&[], 8 * SECOND).await;
    eprintln!("Ada saw the dead relay's member gone after {took:?}");
    let mut carol = View::join(&a.url, "r", "Carol", Some("pw")).await;
    carol.until_names(&["Ada"], 5 * SECOND).await;
    ada.until_names(&["Carol"], 5 * SECOND).await;
    ada.assert_no_surprises();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_to_nats_loses_video_before_audio() {
    const LINK_BYTES_PER_SEC: u64 = 120_000;
    const SECONDS: u32 = 6;
    const VIDEO_BYTES: usize = 40_000;
    let Some(cluster) = Cluster::start("slow-link") else { return };
    let nats_addr: std::net::SocketAddr = cluster.nats.url().trim_start_matches("nats://").parse().unwrap();
    let proxy = ThrottledProxy::start(nats_addr, LINK_BYTES_PER_SEC).unwrap();
    let slow_url = format!("nats://{}", proxy.addr());
    let a = tokio::task::block_in_place(|| {
        let args = ["--cluster", slow_url.as_str(), "--node-id", "a"];
        RelayProcess::start(Path::new(env!("CARGO_BIN_EXE_chinwag-relay")), &args).unwrap()
    });
    let b = cluster.relay("b", &[]);
    until_formed(&[&a, &b], 2).await;
    let ada = View::join(&a.url, "r", "Ada", None).await;
    let mut bob = View::join(&b.url, "r", "Bob", None).await;
    bob.until_names(&["Ada"], 5 * SECOND).await;
    tokio::time::sleep(SECOND).await;

    // Ada sends 50 audio frames a second and 15 video frames of 40 kB: five times what the
    // link to NATS carries.
    let mut ada_client = ada.client;
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for seq in 0..50 * SECONDS {
            tick.tick().await;
            let sent_at = process_clock_us().to_be_bytes();
            ada_client.send_binary(media_frame(MediaKind::Audio, 0, seq, &sent_at)).await.unwrap();
            if seq % 10 == 0 || seq % 10 == 3 || seq % 10 == 6 {
                let mut payload = sent_at.to_vec();
                payload.resize(VIDEO_BYTES, 0x5a);
                ada_client.send_binary(media_frame(MediaKind::Video, 0, seq, &payload)).await.unwrap();
            }
        }
        ada_client
    });
    let (mut audio_delays_ms, mut video_frames) = (Vec::new(), 0u32);
    let deadline = Instant::now() + Duration::from_secs(u64::from(SECONDS) + 3);
    while let Ok(received) = bob.client.next(deadline.saturating_duration_since(Instant::now())).await {
        let Received::Media(bytes) = received else { continue };
        let (header, body) = MediaHeader::decode(&bytes).unwrap();
        match header.kind {
            MediaKind::Audio => {
                let sent_at = u64::from_be_bytes(body[..8].try_into().unwrap());
                audio_delays_ms.push((process_clock_us() - sent_at) as f64 / 1000.0);
            }
            MediaKind::Video => video_frames += 1,
        }
    }
    let _ada = sender.await.unwrap();
    let (_, metrics) = http_get(a.addr, "/metrics").await.unwrap();
    let video_dropped = ["video_superseded", "video_queue_full"]
        .iter()
        .filter_map(|reason| {
            metric(&metrics, &format!("chinwag_cluster_dropped_frames_total{{reason=\"{reason}\"}}"))
        })
        .sum::<u64>();
    audio_delays_ms.sort_by(f64::total_cmp);
    let p95 = audio_delays_ms.get(audio_delays_ms.len() * 95 / 100).copied().unwrap_or(f64::INFINITY);
    eprintln!(
        "over a {LINK_BYTES_PER_SEC} B/s link: {} of {} audio frames, p95 {p95:.1} ms, max {:.1} ms; {video_frames} of {} video frames; relay A dropped {video_dropped} video frames",
        audio_delays_ms.len(),
        50 * SECONDS,
        audio_delays_ms.last().copied().unwrap_or_default(),
        15 * SECONDS,
    );
    assert!(audio_delays_ms.len() as u32 >= 50 * SECONDS * 95 / 100, "audio got through the slow link");
    assert!(p95 < 300.0, "audio waited behind video: p95 {p95:.1} ms");
    assert!((1..15 * SECONDS * 2 / 3).contains(&video_frames), "video gave way: {video_frames}");
    assert!(video_dropped > 0, "relay A counted the video it dropped");
    let queued = metric(&metrics, "chinwag_cluster_queued_bytes").unwrap();
    assert!(queued < 9 << 20, "the queue to NATS stayed within its budget: {queued} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_one_relay_go_on_while_nats_is_down_and_the_cluster_heals() {
    let Some(mut cluster) = Cluster::start("outage") else { return };
    let (a, b) = cluster.pair(&[]).await;
    for relay in [&a, &b] {
        until_health(relay, 200, "ok", 5 * SECOND).await;
    }
    let mut ada = View::join(&a.url, "local", "Ada", None).await;
    let mut bob = View::join(&a.url, "local", "Bob", None).await;
    ada.until_names(&["Bob"], 5 * SECOND).await;
    bob.until_names(&["Ada"], 5 * SECOND).await;

    tokio::task::block_in_place(|| cluster.nats.stop()).unwrap();
    for relay in [&a, &b] {
        let body = until_health(relay, 503, "degraded:", 10 * SECOND).await;
        eprintln!("{} while NATS is down: {body:?}", relay.url);
        until_metric(relay, "chinwag_cluster_connected", 0, 5 * SECOND).await;
    }

    // Media and presence between participants of the same relay go on.
    send_media(&mut ada.client, "Ada").await;
    expect_media(&mut bob, "Ada", ada.id).await;
    bob.client.send(&ClientMessage::State(StateUpdate { muted: true, camera: false })).await.unwrap();
    let bob_id = bob.id;
    ada.until("Bob muted", 5 * SECOND, |peers| peers.get(&bob_id).is_some_and(|peer| peer.muted)).await;

    // A room this relay holds takes a newcomer; one it does not know cannot be checked.
    let mut carol = View::join(&a.url, "local", "Carol", None).await;
    carol.until_names(&["Ada", "Bob"], 5 * SECOND).await;
    ada.until_names(&["Bob", "Carol"], 5 * SECOND).await;
    let (error, close) = refused(&a.url, "nowhere", "Dan", None).await;
    assert_eq!(error.code, ErrorCode::Unavailable, "{error:?}");
    assert!(!error.message.is_empty());
    assert_eq!(close, Some(1013), "try again later");
    let (_, metrics) = http_get(a.addr, "/metrics").await.unwrap();
    assert_eq!(metric(&metrics, "chinwag_errors_sent_total{code=\"unavailable\"}"), Some(1), "{metrics}");

    // NATS comes back on the same port and store; the relays find it by themselves.
    tokio::task::block_in_place(|| cluster.nats.restart()).unwrap();
    for relay in [&a, &b] {
        let took = until_metric(relay, "chinwag_cluster_connected", 1, 10 * SECOND).await;
        eprintln!("{} reconnected {took:?} after NATS restarted", relay.url);
        until_health(relay, 200, "ok", 5 * SECOND).await;
        until_metric(relay, "chinwag_cluster_nodes", 2, 5 * SECOND).await;
    }
    let mut erin = View::join(&a.url, "after", "Erin", None).await;
    let mut frank = View::join(&b.url, "after", "Frank", None).await;
    erin.until_names(&["Frank"], 5 * SECOND).await;
    frank.until_names(&["Erin"], 5 * SECOND).await;
    send_media(&mut erin.client, "Erin").await;
    expect_media(&mut frank, "Erin", erin.id).await;
    send_media(&mut frank.client, "Frank").await;
    expect_media(&mut erin, "Frank", frank.id).await;

    // The call that lived through the outage still works.
    send_media(&mut bob.client, "Bob").await;
    expect_media(&mut ada, "Bob", bob.id).await;
    expect_media(&mut carol, "Bob", bob.id).await;
    for view in [&ada, &bob, &carol, &erin, &frank] {
        view.assert_no_surprises();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_started_before_nats_runs_degraded_then_joins() {
    let Some(mut cluster) = Cluster::start("late-nats") else { return };
    tokio::task::block_in_place(|| cluster.nats.stop()).unwrap();
    let started = Instant::now();
    let a = cluster.relay("a", &[]);
    let took = started.elapsed();
    assert!(took < 8 * SECOND, "the relay took {took:?} to listen without NATS (at most 5 s to try it)");
    let body = until_health(&a, 503, "degraded:", 5 * SECOND).await;
    eprintln!("listening after {took:?} without NATS; /healthz {body:?}");
    until_metric(&a, "chinwag_cluster_connected", 0, SECOND).await;
    let (error, _) = refused(&a.url, "r", "Ada", None).await;
    assert_eq!(error.code, ErrorCode::Unavailable, "{error:?}");

    tokio::task::block_in_place(|| cluster.nats.restart()).unwrap();
    until_metric(&a, "chinwag_cluster_connected", 1, 10 * SECOND).await;
    until_health(&a, 200, "ok", 5 * SECOND).await;
    let b = cluster.relay("b", &[]);
    until_formed(&[&a, &b], 2).await;
    let mut ada = View::join(&a.url, "r", "Ada", None).await;
    let mut bob = View::join(&b.url, "r", "Bob", None).await;
    ada.until_names(&["Bob"], 5 * SECOND).await;
    bob.until_names(&["Ada"], 5 * SECOND).await;
    send_media(&mut ada.client, "Ada").await;
    expect_media(&mut bob, "Ada", ada.id).await;
}

#[test]
fn the_cluster_flags_are_documented() {
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_chinwag-relay")).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--cluster", "--node-id", "--cluster-dead-after"] {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
}
