//! The cluster link: several relays sharing one NATS server act as one service.
//!
//! Each relay publishes its own participants' media and presence on subjects for their room
//! (`chinwag.room.<hex room>.a`, `.v` and `.p`) and subscribes only to rooms it has
//! participants in. Who is in a room, and its password, live in one record per room in a
//! JetStream key-value bucket, changed only by compare-and-set, so passwords and the room size
//! limit hold across relays and participant ids stay unique in a room. Every relay heartbeats
//! on `chinwag.nodes`; one silent for `--cluster-dead-after` is dead and its participants
//! leave the others' rosters.
//!
//! The decisions are the sans-IO cores [`record`], [`roster`] and [`liveness`], and the
//! egress queue is the priority queue every sender of media uses ([`chinwag_queue`]);
//! this module is the tokio shell around them, in four tasks: the worker (every key-value
//! change and presence message, one at a time, so a relay's changes keep their order), one
//! task per subscribed room, the heartbeat, and the publisher that drains the egress queue.
//!
//! When NATS is away, calls on this relay go on; joins into rooms this relay already hosts
//! are admitted from what it last knew, others are refused as `unavailable`; everything is
//! put right (records rewritten, presence republished) when the link is back.

pub mod liveness;
pub mod record;
pub mod roster;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use async_nats::{Client, ConnectOptions, Event, Subject};
use bytes::Bytes;
use chinwag_proto::{ErrorCode, MediaHeader, MediaKind, ParticipantId, Peer, PeerState};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use self::liveness::{AliveNodes, Heard, Liveness};
use self::record::{JoinRequest, RoomRecord};
use self::roster::Presence;
use crate::config::ClusterConfig;
use crate::metrics::{by_kind, kind_index, write_metric};
use crate::rooms::JoinRefusal;
use crate::server::{Closing, Fanout, Hub, Link, lock, refusal};
use chinwag_queue::{AudioPolicy, MediaQueue, Pushed, QueueLimits, Queued};

/// The key-value bucket holding one record per room.
const BUCKET: &str = "chinwag-rooms";
/// Heartbeats and goodbyes.
const NODES_SUBJECT: &str = "chinwag.nodes";
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How often silent relays are looked for.
const LIVENESS_TICK: Duration = Duration::from_millis(250);
/// How long the relay waits for NATS before it says it is listening anyway.
const FIRST_CONNECT: Duration = Duration::from_secs(5);
/// How long one change of a room record may take, retries included.
const RECORD_TIMEOUT: Duration = Duration::from_secs(3);
const RECORD_ATTEMPTS: usize = 32;
/// Operations waiting for the worker; a full queue refuses joins as `unavailable`.
const WORKER_QUEUE: usize = 4096;
/// Messages the NATS client buffers per subscription before it drops (a slow relay): audio
/// and presence messages are small; video frames are large, so fewer of them are kept.
const SUBSCRIPTION_CAPACITY: usize = 4096;
const VIDEO_SUBSCRIPTION_CAPACITY: usize = 128;
/// Commands the NATS client buffers before a publish waits; small, so that a slow NATS link
/// backs up into the egress queue, where video goes first.
const CLIENT_CAPACITY: usize = 256;
/// Video bytes a relay lets travel towards NATS before it waits for them to arrive: with a slow
/// link, frames then wait in the egress queue, where the newest replaces the older, instead of
/// in socket buffers, where they would take seconds to drain.
const VIDEO_IN_FLIGHT: usize = 128 << 10;
/// What may wait for NATS: a link that must never be given up drops its oldest audio when
/// it falls behind (late audio is worth nothing) and keeps the newest video per sender.
const EGRESS_LIMITS: QueueLimits =
    QueueLimits { audio_bytes: 512 << 10, video_bytes: 8 << 20, audio_max_age: Duration::from_millis(500) };

/// A frame waiting for NATS, tagged with its subject and sender.
type Egress = MediaQueue<(Subject, ParticipantId)>;

/// A room's NATS subjects: its key in the bucket is the room name in hex, which keeps any
/// room name a valid subject token and key.
#[derive(Debug, Clone)]
pub(crate) struct RoomSubjects {
    pub key: String,
    pub audio: Subject,
    pub video: Subject,
    pub presence: Subject,
}

impl RoomSubjects {
    pub fn new(room: &str) -> Self {
        let key = room.bytes().fold(String::with_capacity(room.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        });
        let subject = |suffix: &str| Subject::from(format!("chinwag.room.{key}.{suffix}"));
        Self { audio: subject("a"), video: subject("v"), presence: subject("p"), key }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Heartbeat {
    node: String,
    #[serde(default)]
    goodbye: bool,
}

/// A joined member's way out and its room's fan-out, or why the join was refused.
type Joined = Result<(Arc<Link>, Arc<Fanout>), Closing>;

/// What the worker is asked to do.
enum Op {
    Join {
        room: String,
        name: String,
        password: Option<String>,
        reply: oneshot::Sender<Joined>,
    },
    Leave {
        room: String,
        id: ParticipantId,
    },
    State {
        room: String,
        state: PeerState,
    },
    /// The link came back, or another relay appeared: put records and presence right.
    Resync,
    CleanDead {
        node: String,
    },
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Clone, Copy)]
enum ClusterDrop {
    AudioQueueFull,
    VideoQueueFull,
    VideoSuperseded,
    LinkDown,
    PublishFailed,
    BadHeader,
    SlowConsumer,
}

impl ClusterDrop {
    const ALL: [ClusterDrop; 7] = [
        ClusterDrop::AudioQueueFull,
        ClusterDrop::VideoQueueFull,
        ClusterDrop::VideoSuperseded,
        ClusterDrop::LinkDown,
        ClusterDrop::PublishFailed,
        ClusterDrop::BadHeader,
        ClusterDrop::SlowConsumer,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ClusterDrop::AudioQueueFull => "audio_queue_full",
            ClusterDrop::VideoQueueFull => "video_queue_full",
            ClusterDrop::VideoSuperseded => "video_superseded",
            ClusterDrop::LinkDown => "link_down",
            ClusterDrop::PublishFailed => "publish_failed",
            ClusterDrop::BadHeader => "bad_header",
            ClusterDrop::SlowConsumer => "slow_consumer",
        }
    }
}

#[derive(Debug, Default)]
struct ClusterMetrics {
    published: [AtomicU64; 2],
    received: [AtomicU64; 2],
    dropped: [AtomicU64; ClusterDrop::ALL.len()],
}

impl ClusterMetrics {
    fn dropped(&self, reason: ClusterDrop, count: u64) {
        if count > 0 {
            self.dropped[reason as usize].fetch_add(count, Relaxed);
        }
    }
}

/// This relay's membership of the cluster; shared by the hub and the cluster's tasks.
pub(crate) struct ClusterLink {
    url: String,
    /// The node id plus a suffix new at every start, so that a relay restarted under the same
    /// id is not mistaken for its previous life.
    pub(crate) instance: String,
    /// Heartbeats, key-value, presence and audio.
    client: Client,
    /// Video alone, on a connection of its own, so that a backlog of video on a slow link
    /// never queues in front of audio in one TCP stream.
    video_client: Client,
    /// Where `video_client` asks whether its video has arrived; answered on `client`.
    ack_subject: Subject,
    ops: mpsc::Sender<Op>,
    egress: Mutex<Egress>,
    audio_wake: Notify,
    video_wake: Notify,
    liveness: Mutex<Liveness>,
    /// Connected to NATS, as last reported by the client.
    connected: AtomicBool,
    /// Why the link is not usable (not connected, no JetStream), for `/healthz` and logs.
    problem: Mutex<Option<String>>,
    metrics: Arc<ClusterMetrics>,
    /// Rooms whose leave or state change found the worker's queue full; the next resync,
    /// which the heartbeat task asks for, rewrites their records.
    overflowed: Mutex<HashSet<String>>,
    /// Receivers the tasks take when they start.
    startup: Mutex<Option<(mpsc::Receiver<Op>, mpsc::Receiver<Event>)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redacted("tls://chinwag:s3cret@nats.internal:4222"), "tls://***@nats.internal:4222");
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn room_names_become_valid_subject_tokens() {
        let subjects = RoomSubjects::new("Team A.*>");
        assert_eq!(subjects.key, "5465616d20412e2a3e");
        assert_eq!(subjects.audio.as_str(), "chinwag.room.5465616d20412e2a3e.a");
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot use the cluster address {url}")]
pub struct ClusterError {
    url: String,
    #[source]
    source: async_nats::ConnectError,
}

impl ClusterLink {
    /// Connects to NATS, waiting up to [`FIRST_CONNECT`] for the first connection; without it
    /// the relay starts degraded and the client keeps trying.
    pub async fn connect(config: &ClusterConfig) -> Result<Arc<ClusterLink>, ClusterError> {
        let (event_tx, event_rx) = mpsc::channel(64);
        let metrics = Arc::new(ClusterMetrics::default());
        let slow = Arc::clone(&metrics);
        let options = |name: String, subscription_capacity: usize| {
            let options = ConnectOptions::new()
                .name(name)
                .no_echo()
                .retry_on_initial_connect()
                .max_reconnects(None)
                .connection_timeout(Duration::from_secs(2))
                .ping_interval(Duration::from_secs(5))
                .reconnect_delay_callback(|attempts| Duration::from_millis(250 * attempts.clamp(1, 8) as u64))
                .client_capacity(CLIENT_CAPACITY)
                .subscription_capacity(subscription_capacity);
            match &config.ca_file {
                Some(ca_file) => options.add_root_certificates(ca_file.clone()),
                None => options,
            }
        };
        let video_slow = Arc::clone(&metrics);
        let video_options =
            options(format!("chinwag-relay {} video", config.node_id), VIDEO_SUBSCRIPTION_CAPACITY)
                .event_callback(move |event| {
                    let slow = Arc::clone(&video_slow);
                    async move {
                        match event {
                            Event::SlowConsumer(_) => slow.dropped(ClusterDrop::SlowConsumer, 1),
                            Event::Disconnected => debug!("the video link to the cluster dropped"),
                            _ => {}
                        }
                    }
                });
        let options = options(format!("chinwag-relay {}", config.node_id), SUBSCRIPTION_CAPACITY)
            .event_callback(move |event| {
                let event_tx = event_tx.clone();
                let slow = Arc::clone(&slow);
                async move {
                    if let Event::SlowConsumer(_) = event {
                        // This relay did not keep up with what NATS sent; the client dropped it.
                        slow.dropped(ClusterDrop::SlowConsumer, 1);
                    } else {
                        let _ = event_tx.try_send(event);
                    }
                }
            });
        let connect = |options: ConnectOptions| async {
            options
                .connect(config.url.as_str())
                .await
                .map_err(|source| ClusterError { url: redacted(&config.url), source })
        };
        let client = connect(options).await?;
        let video_client = connect(video_options).await?;
        let deadline = Instant::now() + FIRST_CONNECT;
        while client.connection_state() != async_nats::connection::State::Connected
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        let url = redacted(&config.url);
        if !connected {
            warn!(%url, "cannot reach the cluster's NATS server yet; calls on this relay work, rooms across relays wait until it is reachable");
        }
        let suffix: u32 = rand::random();
        let instance = format!("{}#{suffix:08x}", config.node_id);
        let ack_subject = Subject::from(format!("chinwag.ack.{}.{suffix:08x}", config.node_id));
        let (ops, ops_rx) = mpsc::channel(WORKER_QUEUE);
        Ok(Arc::new(ClusterLink {
            problem: Mutex::new((!connected).then(|| format!("cannot reach NATS at {url}"))),
            url,
            liveness: Mutex::new(Liveness::new(&instance, config.dead_after, Instant::now())),
            instance,
            client,
            video_client,
            ack_subject,
            ops,
            egress: Mutex::new(Egress::new(EGRESS_LIMITS, AudioPolicy::DropOldest)),
            audio_wake: Notify::new(),
            video_wake: Notify::new(),
            connected: AtomicBool::new(connected),
            metrics,
            overflowed: Mutex::new(HashSet::new()),
            startup: Mutex::new(Some((ops_rx, event_rx))),
        }))
    }

    /// Starts the cluster's tasks; they live as long as the relay.
    pub fn start(self: &Arc<Self>, hub: &Arc<Hub>) {
        let Some((ops_rx, event_rx)) = lock(&self.startup).take() else { return };
        let worker = Worker {
            link: Arc::clone(self),
            hub: Arc::clone(hub),
            kv: None,
            subscriptions: HashMap::new(),
            dirty: HashSet::new(),
            next_id: rand::random(),
        };
        tokio::spawn(worker.run(ops_rx));
        tokio::spawn(events_task(Arc::clone(self), event_rx));
        tokio::spawn(heartbeat_task(Arc::clone(self), Arc::clone(hub)));
        tokio::spawn(audio_publisher_task(Arc::clone(self)));
        tokio::spawn(video_publisher_task(Arc::clone(self)));
        tokio::spawn(ack_task(Arc::clone(self)));
    }

    pub fn is_up(&self) -> bool {
        lock(&self.problem).is_none()
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    fn set_problem(&self, problem: Option<String>) {
        *lock(&self.problem) = problem;
    }

    /// Joins through the cluster: the room record decides, and the hub admits the member.
    pub async fn join(&self, room: &str, name: &str, password: Option<&str>) -> Joined {
        let (reply, answer) = oneshot::channel();
        let op = Op::Join {
            room: room.to_owned(),
            name: name.to_owned(),
            password: password.map(str::to_owned),
            reply,
        };
        if self.ops.try_send(op).is_err() {
            return Err(unavailable(room, "this relay has too many joins waiting for the cluster"));
        }
        answer.await.unwrap_or_else(|_| Err(unavailable(room, "the cluster worker stopped")))
    }

    pub fn left(&self, room: &str, id: ParticipantId) {
        if self.ops.try_send(Op::Leave { room: room.to_owned(), id }).is_err() {
            self.overflowed(room);
        }
    }

    pub fn state_changed(&self, room: &str, state: PeerState) {
        if self.ops.try_send(Op::State { room: room.to_owned(), state }).is_err() {
            self.overflowed(room);
        }
    }

    fn overflowed(&self, room: &str) {
        warn!(%room, "the cluster worker's queue is full; the room's record is put right by the next resync");
        lock(&self.overflowed).insert(room.to_owned());
    }

    fn send(&self, op: Op) {
        if self.ops.try_send(op).is_err() {
            warn!("the cluster worker's queue is full; dropped a clean-up that the next resync redoes");
        }
    }

    /// Queues a local participant's frame for the other relays.
    pub fn publish_media(
        &self,
        now: Instant,
        subjects: &RoomSubjects,
        kind: MediaKind,
        sender: ParticipantId,
        frame: Bytes,
    ) {
        let pushed = {
            let mut egress = lock(&self.egress);
            match kind {
                MediaKind::Audio => egress.push_audio(now, (subjects.audio.clone(), sender), frame),
                MediaKind::Video => egress.push_video(now, (subjects.video.clone(), sender), frame),
            }
        };
        self.count_dropped(kind, pushed);
        match kind {
            MediaKind::Audio => self.audio_wake.notify_one(),
            MediaKind::Video => self.video_wake.notify_one(),
        }
    }

    async fn publish_frame(&self, client: &Client, publish: Queued<(Subject, ParticipantId)>) {
        let (subject, _) = publish.tag;
        match client.publish(subject, publish.frame).await {
            Ok(()) => {
                self.metrics.published[kind_index(publish.kind)].fetch_add(1, Relaxed);
            }
            Err(error) => {
                debug!(%error, "cannot publish a frame");
                self.metrics.dropped(ClusterDrop::PublishFailed, 1);
            }
        }
    }

    fn count_dropped(&self, kind: MediaKind, pushed: Pushed) {
        let (reason, count) = match (kind, pushed) {
            (_, Pushed::Queued | Pushed::TooSlow) => return,
            (_, Pushed::QueuedDroppingOldAudio(count)) => (ClusterDrop::AudioQueueFull, count),
            (_, Pushed::ReplacedOlderVideo) => (ClusterDrop::VideoSuperseded, 1),
            (_, Pushed::DroppedVideoOverBudget) | (MediaKind::Video, Pushed::DroppedOversized) => {
                (ClusterDrop::VideoQueueFull, 1)
            }
            (MediaKind::Audio, Pushed::DroppedOversized) => (ClusterDrop::AudioQueueFull, 1),
        };
        self.metrics.dropped(reason, count);
    }

    /// A frame from another relay, for this relay's participants in `room`.
    fn received(&self, hub: &Hub, room: &str, kind: MediaKind, frame: Bytes) {
        match MediaHeader::decode(&frame) {
            Ok((header, _)) if header.kind == kind => {
                self.metrics.received[kind_index(kind)].fetch_add(1, Relaxed);
                hub.remote_media(room, kind, header.sender, frame);
            }
            _ => self.metrics.dropped(ClusterDrop::BadHeader, 1),
        }
    }

    fn alive_nodes(&self) -> AliveNodes {
        lock(&self.liveness).snapshot(Instant::now())
    }

    /// For `/healthz`: a line on the cluster when all is well, else what is wrong.
    pub fn health(&self) -> Result<String, String> {
        match lock(&self.problem).clone() {
            None => Ok(format!("cluster: connected, {} relays\n", lock(&self.liveness).alive_count())),
            Some(problem) => Err(problem),
        }
    }

    pub fn render_metrics(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            write_metric(out, &format!("cluster_{name}"), kind, help, samples);
        };
        let up = u64::from(self.is_up());
        metric("connected", "gauge", "1 while the link to the cluster works.", &[(String::new(), up)]);
        let nodes = lock(&self.liveness).alive_count() as u64;
        metric("nodes", "gauge", "Live relays in the cluster, this one included.", &[(String::new(), nodes)]);
        metric(
            "published_frames_total",
            "counter",
            "Media frames published to the other relays.",
            &by_kind(&self.metrics.published),
        );
        metric(
            "received_frames_total",
            "counter",
            "Media frames received from the other relays.",
            &by_kind(&self.metrics.received),
        );
        let drops: Vec<_> = ClusterDrop::ALL
            .iter()
            .map(|reason| {
                (
                    format!("{{reason=\"{}\"}}", reason.as_str()),
                    self.metrics.dropped[*reason as usize].load(Relaxed),
                )
            })
            .collect();
        metric(
            "dropped_frames_total",
            "counter",
            "Media frames the cluster link dropped, by reason.",
            &drops,
        );
        let queued = lock(&self.egress).queued_bytes() as u64;
        metric("queued_bytes", "gauge", "Bytes waiting to be published.", &[(String::new(), queued)]);
    }

    /// On shutdown: lets the worker finish what it was given, then says goodbye so that the
    /// other relays drop this one's participants at once.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.ops.try_send(Op::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), finished).await;
        }
        if self.is_connected() {
            let goodbye = Heartbeat { node: self.instance.clone(), goodbye: true };
            let payload = Bytes::from(serde_json::to_vec(&goodbye).expect("a heartbeat serialises"));
            let _ = self.client.publish(NODES_SUBJECT, payload).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), self.client.flush()).await;
        }
    }

    async fn publish_presence(&self, subjects: &RoomSubjects, presence: &Presence) {
        if !self.is_connected() {
            return;
        }
        let payload = Bytes::from(serde_json::to_vec(presence).expect("presence serialises"));
        if let Err(error) = self.client.publish(subjects.presence.clone(), payload).await {
            debug!(%error, "cannot publish presence");
        }
    }
}

/// The address without a user name or password in it, for logs and `/healthz`.
fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let hidden = if host.len() < rest.len() { "***@" } else { "" };
    if scheme.is_empty() { format!("{hidden}{host}") } else { format!("{scheme}://{hidden}{host}") }
}

fn unavailable(room: &str, why: &str) -> Closing {
    Closing {
        code: ErrorCode::Unavailable,
        message: format!("cannot check room \"{room}\" right now ({why}); try again in a moment"),
    }
}

/// Follows the NATS client's connection: logs, `/healthz` and a resync on every reconnect.
async fn events_task(link: Arc<ClusterLink>, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected => {
                info!(url = %link.url, node = %link.instance, "connected to the cluster");
                link.connected.store(true, Relaxed);
                lock(&link.liveness).reconnected(Instant::now());
                let _ = link.ops.send(Op::Resync).await;
            }
            Event::Disconnected => {
                warn!(url = %link.url, "lost the link to the cluster; calls on this relay go on, rooms across relays pause until it is back");
                link.connected.store(false, Relaxed);
                link.set_problem(Some(format!("lost the link to NATS at {}", link.url)));
            }
            Event::LameDuckMode => warn!(url = %link.url, "the NATS server is about to shut down"),
            Event::ServerError(error) => warn!(url = %link.url, %error, "the NATS server reported an error"),
            Event::ClientError(error) => warn!(url = %link.url, %error, "the NATS client reported an error"),
            _ => {}
        }
    }
}

/// Sends heartbeats, hears the other relays' and declares the silent ones dead.
async fn heartbeat_task(link: Arc<ClusterLink>, hub: Arc<Hub>) {
    let mut beats = loop {
        match link.client.subscribe(NODES_SUBJECT).await {
            Ok(subscriber) => break subscriber,
            Err(error) => {
                warn!(%error, "cannot subscribe to heartbeats; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let beat = Heartbeat { node: link.instance.clone(), goodbye: false };
    let beat = Bytes::from(serde_json::to_vec(&beat).expect("a heartbeat serialises"));
    let mut tick = tokio::time::interval(LIVENESS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat: Option<Instant> = None;
    loop {
        tokio::select! {
            message = beats.next() => {
                let Some(message) = message else { return };
                let Ok(heartbeat) = serde_json::from_slice::<Heartbeat>(&message.payload) else {
                    debug!("ignored a malformed heartbeat");
                    continue;
                };
                if heartbeat.goodbye {
                    if lock(&link.liveness).handle_goodbye(&heartbeat.node) {
                        info!(node = %heartbeat.node, "a relay left the cluster");
                        node_gone(&link, &hub, heartbeat.node);
                    }
                } else if lock(&link.liveness).handle_heartbeat(Instant::now(), &heartbeat.node) == Heard::New {
                    info!(node = %heartbeat.node, "a relay joined the cluster");
                    // It may have missed this relay's presence, or taken it for dead.
                    link.send(Op::Resync);
                }
            }
            _ = tick.tick() => {
                if !link.is_connected() {
                    continue;
                }
                let now = Instant::now();
                if last_beat.is_none_or(|last| now.duration_since(last) >= HEARTBEAT_INTERVAL) {
                    last_beat = Some(now);
                    if let Err(error) = link.client.publish(NODES_SUBJECT, beat.clone()).await {
                        debug!(%error, "cannot send a heartbeat");
                    }
                }
                if !lock(&link.overflowed).is_empty() {
                    link.send(Op::Resync);
                }
                let dead = lock(&link.liveness).expire(now);
                for node in dead {
                    warn!(%node, "a relay went silent; its participants leave");
                    node_gone(&link, &hub, node);
                }
                // Members of relays never heard from at all (dead before this one started, and
                // still in a record) leave once the grace after connecting is over.
                let alive = lock(&link.liveness).snapshot(now);
                for node in hub.roster_nodes() {
                    if !alive.is_alive(&node) {
                        info!(%node, "a relay in a room's record is not alive; its participants leave");
                        node_gone(&link, &hub, node);
                    }
                }
            }
        }
    }
}

fn node_gone(link: &ClusterLink, hub: &Hub, node: String) {
    hub.node_dead(&node);
    link.send(Op::CleanDead { node });
}

/// Drains the egress queue's audio onto the main connection.
async fn audio_publisher_task(link: Arc<ClusterLink>) {
    loop {
        let next = lock(&link.egress).pop_audio();
        let Some(publish) = next else {
            link.audio_wake.notified().await;
            continue;
        };
        if !link.is_connected() {
            let lost = lock(&link.egress).clear();
            link.metrics.dropped(ClusterDrop::LinkDown, lost + 1);
            continue;
        }
        link.publish_frame(&link.client, publish).await;
    }
}

/// Drains the egress queue's video onto the video connection, letting at most
/// [`VIDEO_IN_FLIGHT`] bytes travel before it asks NATS (through the main connection's
/// responder) whether they arrived. While it waits, newer frames replace older ones in the
/// queue: a slow link shows as a lower frame rate, not as delay.
async fn video_publisher_task(link: Arc<ClusterLink>) {
    let mut in_flight = 0;
    loop {
        let next = lock(&link.egress).pop_video();
        let Some(publish) = next else {
            link.video_wake.notified().await;
            continue;
        };
        if !link.is_connected()
            || link.video_client.connection_state() != async_nats::connection::State::Connected
        {
            link.metrics.dropped(ClusterDrop::LinkDown, 1);
            continue;
        }
        in_flight += publish.frame.len();
        link.publish_frame(&link.video_client, publish).await;
        if in_flight >= VIDEO_IN_FLIGHT {
            in_flight = 0;
            let asked = link.video_client.request(link.ack_subject.clone(), Bytes::new());
            if tokio::time::timeout(Duration::from_secs(2), asked).await.is_err() {
                debug!("video took over 2 s to reach NATS");
            }
        }
    }
}

/// Answers the video connection's "has it all arrived?" on the main connection.
async fn ack_task(link: Arc<ClusterLink>) {
    let mut asks = loop {
        match link.client.subscribe(link.ack_subject.clone()).await {
            Ok(subscriber) => break subscriber,
            Err(error) => {
                warn!(%error, "cannot subscribe for video acknowledgements; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    while let Some(ask) = asks.next().await {
        if let Some(reply) = ask.reply {
            let _ = link.client.publish(reply, Bytes::new()).await;
        }
    }
}

/// Forwards one room's media and presence from the other relays to this relay's members.
async fn room_task(
    link: Arc<ClusterLink>,
    hub: Arc<Hub>,
    room: String,
    mut audio: async_nats::Subscriber,
    mut video: async_nats::Subscriber,
    mut presence: async_nats::Subscriber,
) {
    loop {
        tokio::select! {
            biased;
            message = presence.next() => {
                let Some(message) = message else { return };
                match serde_json::from_slice::<Presence>(&message.payload) {
                    Ok(presence) => hub.remote_presence(&room, presence),
                    Err(error) => debug!(%error, "ignored a malformed presence message"),
                }
            }
            message = audio.next() => {
                let Some(message) = message else { return };
                link.received(&hub, &room, MediaKind::Audio, message.payload);
            }
            message = video.next() => {
                let Some(message) = message else { return };
                link.received(&hub, &room, MediaKind::Video, message.payload);
            }
        }
    }
}

/// Why a change of a room record did not happen.
enum RecordError {
    Refused(JoinRefusal),
    Failed(String),
}

/// Changes `key`'s record by compare-and-set: reads it, lets `change` decide the next version
/// (`None` deletes it), and writes it only if nobody else wrote in between, else tries again.
async fn modify_record<T>(
    kv: &kv::Store,
    key: &str,
    mut change: impl FnMut(Option<RoomRecord>) -> Result<(Option<RoomRecord>, T), JoinRefusal>,
) -> Result<(Option<RoomRecord>, T), RecordError> {
    let attempts = async {
        for _ in 0..RECORD_ATTEMPTS {
            let entry = kv.entry(key).await.map_err(|error| RecordError::Failed(error.to_string()))?;
            let (current, revision) = match entry {
                None => (None, 0),
                Some(entry) if entry.operation == kv::Operation::Put => {
                    let record = serde_json::from_slice::<RoomRecord>(&entry.value)
                        .inspect_err(
                            |error| warn!(%key, %error, "a room record was unreadable; starting it over"),
                        )
                        .ok();
                    (record, entry.revision)
                }
                Some(entry) => (None, entry.revision),
            };
            let (next, output) = change(current).map_err(RecordError::Refused)?;
            let written = match &next {
                Some(record) => {
                    let value = Bytes::from(serde_json::to_vec(record).expect("a record serialises"));
                    kv.update(key, value, revision).await.map(drop).map_err(|error| error.to_string())
                }
                None if revision == 0 => Ok(()),
                None => {
                    kv.delete_expect_revision(key, Some(revision)).await.map_err(|error| error.to_string())
                }
            };
            match written {
                Ok(()) => return Ok((next, output)),
                // Most likely another relay wrote first: read again.
                Err(error) => debug!(%key, %error, "a room record changed underneath; trying again"),
            }
        }
        Err(RecordError::Failed(format!("the record kept changing over {RECORD_ATTEMPTS} attempts")))
    };
    tokio::time::timeout(RECORD_TIMEOUT, attempts)
        .await
        .unwrap_or_else(|_| Err(RecordError::Failed("the NATS server did not answer in time".into())))
}

/// Carries out [`Op`]s one at a time.
struct Worker {
    link: Arc<ClusterLink>,
    hub: Arc<Hub>,
    kv: Option<kv::Store>,
    subscriptions: HashMap<String, JoinHandle<()>>,
    /// Rooms whose record may be out of date because a change could not be written.
    dirty: HashSet<String>,
    /// Participant ids are handed out in sequence from a random start, so that two joins in
    /// the worker never pick the same one and relays rarely collide (the record decides).
    next_id: u32,
}

impl Worker {
    async fn run(mut self, mut ops: mpsc::Receiver<Op>) {
        while let Some(op) = ops.recv().await {
            match op {
                Op::Join { room, name, password, reply } => {
                    let joined = self.join(&room, &name, password.as_deref()).await;
                    if let Err(Ok((link, _))) = reply.send(joined) {
                        // The connection went away while waiting.
                        self.hub.leave(link.id);
                    }
                }
                Op::Leave { room, id } => self.leave(&room, id).await,
                Op::State { room, state } => self.state(&room, state).await,
                Op::Resync => self.resync().await,
                Op::CleanDead { node } => self.clean_dead(&node).await,
                Op::Flush(done) => {
                    let _ = done.send(());
                }
            }
            self.reconcile_subscriptions().await;
        }
    }

    /// The key-value bucket, created by whichever relay comes first. `None` while NATS is
    /// unreachable or has no JetStream (which is then said in `/healthz`).
    async fn kv(&mut self) -> Option<kv::Store> {
        if !self.link.is_connected() {
            return None;
        }
        if self.kv.is_none() {
            let jetstream = async_nats::jetstream::new(self.link.client.clone());
            // The bucket's stream is made by hand, as `create_key_value` would make it:
            // async-nats's version reads account fields that nats-server 2.9 does not send.
            let stream = async_nats::jetstream::stream::Config {
                name: format!("KV_{BUCKET}"),
                description: Some("Chinwag rooms: members and password hash".into()),
                subjects: vec![format!("$KV.{BUCKET}.>")],
                max_messages_per_subject: 1,
                // On disk, so that a NATS restart keeps passwords; relays that died meanwhile
                // are cleaned out of the records as they are next read.
                storage: async_nats::jetstream::stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: async_nats::jetstream::stream::DiscardPolicy::New,
                num_replicas: 1,
                ..Default::default()
            };
            let store = match jetstream.get_key_value(BUCKET).await {
                Ok(store) => Ok(store),
                Err(_) => match jetstream.get_or_create_stream(stream).await {
                    Ok(_) => jetstream.get_key_value(BUCKET).await.map_err(|error| error.to_string()),
                    Err(error) => Err(error.to_string()),
                },
            };
            match store {
                Ok(store) => self.kv = Some(store),
                Err(error) => {
                    let problem = format!(
                        "the NATS server at {} has no usable JetStream ({error}); start it with -js",
                        self.link.url
                    );
                    warn!("{problem}");
                    self.link.set_problem(Some(problem));
                    return None;
                }
            }
        }
        self.link.set_problem(None);
        self.kv.clone()
    }

    async fn reconcile_subscriptions(&mut self) {
        let tracked: HashSet<String> = self.hub.roster_rooms().into_iter().collect();
        self.subscriptions.retain(|room, task| {
            let keep = tracked.contains(room);
            if !keep {
                // Dropping the subscribers unsubscribes.
                task.abort();
            }
            keep
        });
        for room in tracked {
            if self.subscriptions.contains_key(&room) {
                continue;
            }
            let subjects = RoomSubjects::new(&room);
            let client = &self.link.client;
            let subscribed = async {
                Ok::<_, async_nats::SubscribeError>((
                    client.subscribe(subjects.audio.clone()).await?,
                    self.link.video_client.subscribe(subjects.video.clone()).await?,
                    client.subscribe(subjects.presence.clone()).await?,
                ))
            };
            match subscribed.await {
                Ok((audio, video, presence)) => {
                    let task = room_task(
                        Arc::clone(&self.link),
                        Arc::clone(&self.hub),
                        room.clone(),
                        audio,
                        video,
                        presence,
                    );
                    self.subscriptions.insert(room, tokio::spawn(task));
                }
                Err(error) => warn!(%room, %error, "cannot subscribe to a room's subjects"),
            }
        }
    }

    fn pick_id(&mut self, record: Option<&RoomRecord>) -> ParticipantId {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            let id = ParticipantId(self.next_id);
            if self.next_id != 0 && record.is_none_or(|record| record.is_free(id)) && !self.hub.id_in_use(id)
            {
                return id;
            }
        }
    }

    async fn join(&mut self, room: &str, name: &str, password: Option<&str>) -> Joined {
        self.hub.roster_acquire(room);
        self.reconcile_subscriptions().await;
        match self.admit(room, name, password).await {
            Ok(id) => {
                let (link, fanout) = self.hub.join_admitted(room, name, id);
                let peer = Peer { id, name: name.to_owned(), muted: false, camera: false };
                let presence = Presence::Joined { node: self.link.instance.clone(), peer };
                self.link.publish_presence(&RoomSubjects::new(room), &presence).await;
                Ok((link, fanout))
            }
            Err(closing) => {
                self.hub.roster_release(room);
                Err(closing)
            }
        }
    }

    async fn admit(
        &mut self,
        room: &str,
        name: &str,
        password: Option<&str>,
    ) -> Result<ParticipantId, Closing> {
        if let Some(kv) = self.kv().await {
            let first = !self.hub.roster_is_synced(room);
            let alive = self.link.alive_nodes();
            let node = self.link.instance.clone();
            let request = JoinRequest {
                name,
                password,
                node: &node,
                max_per_room: self.hub.max_per_room(),
                salt: rand::random(),
            };
            let key = RoomSubjects::new(room).key;
            let modified = modify_record(&kv, &key, |record| {
                let record = record.and_then(|record| record.without_dead(|node| alive.is_alive(node)));
                let id = self.pick_id(record.as_ref());
                RoomRecord::admit(record, id, &request).map(|record| (Some(record), id))
            })
            .await;
            match modified {
                Ok((record, id)) => {
                    if first {
                        self.hub.roster_sync(room, record.as_ref(), &alive);
                    }
                    return Ok(id);
                }
                Err(RecordError::Refused(why)) => return Err(refusal(room, why)),
                Err(RecordError::Failed(error)) => {
                    warn!(%room, %error, "cannot read or write the room's record; judging the join locally");
                }
            }
        }
        match self.hub.admit_offline(room, password) {
            None => Err(unavailable(room, "this relay has lost its link to the cluster")),
            Some(Err(why)) => Err(refusal(room, why)),
            Some(Ok(())) => {
                self.dirty.insert(room.to_owned());
                Ok(self.pick_id(None))
            }
        }
    }

    /// Rewrites `room`'s record with `change`; when that cannot be done now, the room is
    /// left for the next resync.
    async fn update_record(&mut self, room: &str, mut change: impl FnMut(RoomRecord) -> Option<RoomRecord>) {
        let written = match self.kv().await {
            Some(kv) => {
                let key = RoomSubjects::new(room).key;
                modify_record(&kv, &key, |record| Ok((record.and_then(&mut change), ()))).await.is_ok()
            }
            None => false,
        };
        if !written {
            self.dirty.insert(room.to_owned());
        }
    }

    async fn leave(&mut self, room: &str, id: ParticipantId) {
        self.update_record(room, |record| record.remove(id)).await;
        let presence = Presence::Left { node: self.link.instance.clone(), id };
        self.link.publish_presence(&RoomSubjects::new(room), &presence).await;
    }

    async fn state(&mut self, room: &str, state: PeerState) {
        self.update_record(room, |mut record| {
            record.set_state(state);
            Some(record)
        })
        .await;
        let presence = Presence::State { node: self.link.instance.clone(), state };
        self.link.publish_presence(&RoomSubjects::new(room), &presence).await;
    }

    /// Takes a dead relay's members out of the records of the rooms this relay is in.
    async fn clean_dead(&mut self, node: &str) {
        if self.kv().await.is_none() {
            return;
        }
        for room in self.hub.roster_rooms() {
            self.update_record(&room, |record| record.without_dead(|member_node| member_node != node)).await;
        }
    }

    /// Makes every record this relay touches hold exactly its participants, rereads the other
    /// relays' members, and republishes this relay's presence.
    async fn resync(&mut self) {
        // After a NATS restart the old handle may point at a bucket that had to be made anew.
        self.kv = None;
        let Some(kv) = self.kv().await else { return };
        let mut rooms: HashSet<String> = self.hub.roster_rooms().into_iter().collect();
        rooms.extend(self.dirty.drain());
        rooms.extend(lock(&self.link.overflowed).drain());
        let alive = self.link.alive_nodes();
        let me = self.link.instance.clone();
        for room in rooms {
            let subjects = RoomSubjects::new(&room);
            let tracked = self.hub.roster_begin_sync(&room);
            let locals = self.hub.local_peers(&room);
            let known_password = self.hub.roster_password(&room);
            let modified = modify_record(&kv, &subjects.key, |record| {
                let record = record.and_then(|record| record.without_dead(|node| alive.is_alive(node)));
                let gone: Vec<ParticipantId> = record
                    .iter()
                    .flat_map(|record| record.members.iter())
                    .filter(|member| {
                        member.node == me && !locals.iter().any(|local| local.id == member.peer.id)
                    })
                    .map(|member| member.peer.id)
                    .collect();
                // A record lost with the NATS store gets back the password this relay knew.
                let record = record
                    .or_else(|| Some(RoomRecord { password: known_password.clone(), members: Vec::new() }));
                Ok((RoomRecord::reconcile_node(record, &me, &locals), gone))
            })
            .await;
            match modified {
                Ok((record, gone)) => {
                    if tracked {
                        self.hub.roster_sync(&room, record.as_ref(), &alive);
                    }
                    for id in gone {
                        self.link.publish_presence(&subjects, &Presence::Left { node: me.clone(), id }).await;
                    }
                    for peer in locals {
                        self.link
                            .publish_presence(&subjects, &Presence::Joined { node: me.clone(), peer })
                            .await;
                    }
                }
                Err(_) => {
                    if tracked {
                        self.hub.roster_end_sync(&room);
                    }
                    self.dirty.insert(room);
                }
            }
        }
    }
}
