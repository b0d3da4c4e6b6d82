//! The tokio shell around the relay's cores: it accepts connections, speaks HTTP and
//! WebSocket, reads the clock, and moves frames between sockets and [`OutQueue`]s. Decisions
//! are made by the cores ([`Rooms`], [`OutQueue`], [`RateLimiter`]); this module only carries
//! them out.
//!
//! Each connection runs in one task with two halves joined by a `select!`: the reader handles
//! what the client sends and pushes media straight into the other members' queues; the writer
//! drains this connection's own queue onto its socket. Nothing one connection does waits on
//! another connection's socket.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use chinwag_proto::{
    ClientMessage, ErrorCode, MediaHeader, MediaKind, ParticipantId, Peer, ProtoError, ServerMessage,
    VideoLayer, Welcome, close_code, parse_client_message, rewrite_sender_id, validate_name,
    validate_password, validate_room,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::{debug, info, warn};

use crate::cluster::liveness::AliveNodes;
use crate::cluster::record::RoomRecord;
use crate::cluster::roster::{Change, Presence, Roster};
use crate::cluster::{ClusterError, ClusterLink, RoomSubjects};
use crate::config::{Config, TlsFiles};
use crate::guard::{Locked, PasswordGuard};
use crate::http::{self, Prefixed, Route};
use crate::layers::{LAYER_FRAME_TIME, Layers};
use crate::limiter::{FrameMeter, RateLimiter};
use crate::metered::{Metered, is_rate_exceeded};
use crate::metrics::{DropReason, Gauges, Metrics, RefusedReason};
use crate::pacer::VideoPacer;
use crate::rooms::{JoinRefusal, Rooms};
use crate::socket::Unsent;
use crate::sources::{Source, SourceLimits, SourceRefusal, Sources};
use crate::token::TokenError;
use chinwag_queue::{AudioPolicy, MediaQueue, Next, Pushed, QueueLimits, Queued};

/// How many queued items the writer takes per lock of its queue.
const WRITE_BATCH: usize = 64;
/// How often the relay pings a receiver it is sending video to: its link's round trip is what
/// paces that video.
const VIDEO_PING_INTERVAL: Duration = Duration::from_millis(250);
/// How long after the last video frame those frequent pings go on.
const VIDEO_PINGS_FOR: Duration = Duration::from_secs(3);
/// When a room is full, a member silent this long gives its place to a newcomer: clients
/// ping at least once a second, so it is almost surely a connection that only looks alive.
const SILENT_MEMBER_GIVES_WAY: Duration = Duration::from_secs(5);
/// How long a closing connection may take to deliver its last error and close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How many connections that arrive while the relay is full may be read at once, to answer
/// `/healthz` and `/metrics`, and for how long.
const WHILE_FULL_LANES: usize = 32;
const WHILE_FULL_GRACE: Duration = Duration::from_secs(2);
/// How long the relay waits for connections to close on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// A small read buffer keeps idle connections cheap; tungstenite's default is 128 KiB.
const READ_BUFFER_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read TLS file {path}")]
    TlsFile {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS certificate and key in {cert} and {key} do not work together")]
    TlsConfig {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A bound relay, ready to [`run`](Relay::run).
pub struct Relay {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    hub: Arc<Hub>,
    /// Connections arriving while the relay is full that may be read to answer `/healthz`
    /// and `/metrics`.
    while_full: Arc<Semaphore>,
}

impl Relay {
    /// Opens the listening socket and loads the TLS files, so that every configuration error
    /// shows before the relay says it is listening.
    pub async fn bind(config: Config) -> Result<Relay, RelayError> {
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| RelayError::Bind { addr: config.listen, source })?;
        let local_addr =
            listener.local_addr().map_err(|source| RelayError::Bind { addr: config.listen, source })?;
        let cluster = match &config.cluster {
            Some(cluster) => Some(ClusterLink::connect(cluster).await?),
            None => None,
        };
        let hub = Arc::new(Hub::new(config, cluster));
        if let Some(cluster) = &hub.cluster {
            cluster.start(&hub);
        }
        Ok(Relay { listener, local_addr, tls, hub, while_full: Arc::new(Semaphore::new(WHILE_FULL_LANES)) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address clients dial: `ws://ADDR` or, under TLS, `wss://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Serves until `shutdown` completes, then tells every client the relay is shutting down
    /// and waits briefly for them to go.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, peer_addr)) => self.spawn_connection(tcp, peer_addr, stop_rx.clone()),
                    Err(error) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        info!(connections = self.hub.metrics.open_connections(), "shutting down");
        let _ = stop_tx.send(true);
        drop(self.listener);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while self.hub.metrics.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(cluster) = &self.hub.cluster {
            cluster.shutdown().await;
        }
    }

    fn spawn_connection(&self, tcp: TcpStream, peer_addr: SocketAddr, stop: watch::Receiver<bool>) {
        let hub = Arc::clone(&self.hub);
        if let Err(error) = crate::socket::tune(&tcp, hub.config.socket_send_buffer) {
            debug!(%peer_addr, %error, "cannot tune the socket");
        }
        let unsent = Unsent::of(&tcp);
        let source = Source::of(peer_addr.ip());
        if let Err(refusal) = lock(&hub.sources).handle_open(source) {
            let (reason, body) = match refusal {
                SourceRefusal::TooManyConnections { max } => (
                    RefusedReason::SourceConnections,
                    format!("your address has as many connections to this relay as it allows ({max})\n"),
                ),
                SourceRefusal::TooManyHandshakes { max } => (
                    RefusedReason::SourceHandshakes,
                    format!(
                        "your address has as many connections still joining as this relay allows ({max})\n"
                    ),
                ),
            };
            debug!(%source, ?refusal, "turned a connection away");
            hub.metrics.connection_refused(reason);
            tokio::spawn(async move {
                let mut tcp = tcp;
                let response = http::respond(&mut tcp, "503 Service Unavailable", "text/plain", &body);
                let _ = tokio::time::timeout(CLOSE_GRACE, response).await;
            });
            return;
        }
        let ticket = SourceTicket { hub: Arc::clone(&hub), source, handshaking: true };
        if hub.metrics.open_connections() >= hub.config.max_connections as u64 {
            hub.metrics.connection_refused(RefusedReason::RelayFull);
            let tls = self.tls.clone();
            match Arc::clone(&self.while_full).try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(async move {
                        let _permit = permit;
                        let _ticket = ticket;
                        answer_while_full(tcp, tls, hub).await;
                    });
                }
                Err(_) => {
                    hub.metrics.error_sent(ErrorCode::ServerFull);
                    tokio::spawn(async move {
                        let _ticket = ticket;
                        let mut tcp = tcp;
                        let response =
                            http::respond(&mut tcp, "503 Service Unavailable", "text/plain", full_message());
                        let _ = tokio::time::timeout(CLOSE_GRACE, response).await;
                    });
                }
            }
            return;
        }
        hub.metrics.connection_opened();
        let tls = self.tls.clone();
        tokio::spawn(async move {
            let _guard = OpenConnection(Arc::clone(&hub));
            // `unsent` reads the socket's queue by its descriptor: it is used only while the
            // stream that owns the socket is alive, inside `serve`.
            match tls {
                None => serve(tcp, hub, stop, unsent, ticket).await,
                Some(acceptor) => {
                    let deadline = tokio::time::Instant::now() + hub.config.join_timeout;
                    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => serve(tls, hub, stop, unsent, ticket).await,
                        Ok(Err(error)) => debug!(%peer_addr, %error, "TLS handshake failed"),
                        Err(_) => debug!(%peer_addr, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, RelayError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| RelayError::TlsFile { path: files.cert.clone(), source })?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|source| RelayError::TlsFile { path: files.key.clone(), source })?;
    let mut config =
        rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).map_err(
            |source| RelayError::TlsConfig { cert: files.cert.clone(), key: files.key.clone(), source },
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection(Arc<Hub>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics.connection_closed();
    }
}

/// What all connections share.
pub(crate) struct Hub {
    config: Config,
    epoch: Instant,
    /// The relay clock at `epoch`: wall-clock microseconds since 1970, so that every relay of
    /// a cluster (on machines whose clocks are in sync) keeps the same clock.
    epoch_us: u64,
    metrics: Metrics,
    /// Connections by source, for the per-source limits.
    sources: Mutex<Sources>,
    /// Wrong passwords by source and by room.
    passwords: Mutex<PasswordGuard>,
    state: Mutex<HubState>,
    pub(crate) cluster: Option<Arc<ClusterLink>>,
}

struct HubState {
    rooms: Rooms,
    links: HashMap<ParticipantId, Arc<Link>>,
    fanouts: HashMap<String, Arc<Fanout>>,
    /// In a cluster: the participants other relays hold in the rooms this relay is in.
    roster: Roster,
    /// Each joined participant's `resume` secret.
    resume: HashMap<String, ParticipantId>,
}

/// The members of one room, as the reader of each member sees them when it forwards media.
/// Rebuilt on every join and leave, read on every frame.
pub(crate) struct Fanout {
    members: RwLock<Arc<[Arc<Link>]>>,
    /// In a cluster: how many participants other relays hold in the room, and where to
    /// publish for them.
    remote: AtomicUsize,
    subjects: Option<RoomSubjects>,
}

impl Fanout {
    fn new(room: &str, clustered: bool) -> Self {
        Self {
            members: RwLock::default(),
            remote: AtomicUsize::new(0),
            subjects: clustered.then(|| RoomSubjects::new(room)),
        }
    }

    fn set_members(&self, members: Arc<[Arc<Link>]>) {
        *self.members.write().unwrap_or_else(std::sync::PoisonError::into_inner) = members;
    }

    fn members(&self) -> Arc<[Arc<Link>]> {
        Arc::clone(&self.members.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// One joined participant's way out: its queue, and the signal that wakes its writer.
pub(crate) struct Link {
    pub(crate) id: ParticipantId,
    /// The secret that lets this participant's next connection take its place.
    resume: String,
    state: Mutex<LinkState>,
    /// Wakes the writer when something was queued or the link is closing.
    wake: Notify,
    /// Wakes the connection's task when the link is closing, so that a writer stuck on a full
    /// socket can be given up on.
    closed: Notify,
    /// Bytes received from this participant, told back in pongs.
    bytes_in: AtomicU64,
    /// The relay clock when this participant's last message arrived.
    last_heard_us: AtomicU64,
    /// How much video this participant's link carries.
    pacer: Mutex<VideoPacer>,
}

struct LinkState {
    /// This receiver's queue, each frame tagged with its sender.
    queue: MediaQueue<ParticipantId>,
    /// What each sender's video layers look like to this receiver, and which one it gets.
    layers: HashMap<ParticipantId, Layers>,
    /// Set once: why the connection is to close, sent to the client before the close frame.
    closing: Option<Closing>,
}

#[derive(Debug, Clone)]
pub(crate) struct Closing {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

/// The error for a refused join.
pub(crate) fn refusal(room: &str, refusal: JoinRefusal) -> Closing {
    match refusal {
        JoinRefusal::WrongPassword => Closing {
            code: ErrorCode::WrongPassword,
            message: format!("room \"{room}\" has a password and the one given does not match"),
        },
        JoinRefusal::RoomFull { max } => Closing {
            code: ErrorCode::RoomFull,
            message: format!(
                "room \"{room}\" is full ({max} participants); try again later or pick another room"
            ),
        },
    }
}

/// Locks a mutex, carrying on with the data if a panic elsewhere poisoned it: every critical
/// section here leaves the data consistent at each step.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    fn new(config: Config, cluster: Option<Arc<ClusterLink>>) -> Self {
        let epoch_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64);
        Self {
            state: Mutex::new(HubState {
                rooms: Rooms::new(config.max_participants),
                links: HashMap::new(),
                fanouts: HashMap::new(),
                roster: Roster::default(),
                resume: HashMap::new(),
            }),
            sources: Mutex::new(Sources::new(SourceLimits {
                connections: config.max_connections_per_source,
                handshakes: config.max_handshakes_per_source,
            })),
            passwords: Mutex::new(PasswordGuard::default()),
            config,
            epoch: Instant::now(),
            epoch_us,
            metrics: Metrics::default(),
            cluster,
        }
    }

    /// The relay clock in microseconds: the wall clock when the relay started, then steady
    /// (a wall-clock step while running does not make it jump).
    fn now_us(&self) -> u64 {
        self.epoch_us + self.epoch.elapsed().as_micros() as u64
    }

    fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            audio_bytes: self.config.receiver_audio_bytes,
            video_bytes: self.config.receiver_video_bytes,
            audio_max_age: self.config.receiver_max_delay,
        }
    }

    /// Joins a participant: through the cluster's room record when clustered, else here.
    /// A join that brings the `resume` secret of a connection still in the same room ends
    /// that connection first: it is the same client back, and its old connection, which
    /// may only look alive, must not keep it out. A join into a full room ends the
    /// connections of members silent for [`SILENT_MEMBER_GIVES_WAY`] and tries again.
    async fn join(
        &self,
        room: &str,
        name: &str,
        password: Option<&str>,
        resume: Option<&str>,
    ) -> Result<(Arc<Link>, Arc<Fanout>), Closing> {
        match self.join_once(room, name, password, resume).await {
            Err(Closing { code: ErrorCode::RoomFull, .. }) if self.end_silent_members(room) => {
                self.join_once(room, name, password, None).await
            }
            joined => joined,
        }
    }

    /// Ends the connections of `room`'s members on this relay silent for
    /// [`SILENT_MEMBER_GIVES_WAY`]; whether there were any.
    fn end_silent_members(&self, room: &str) -> bool {
        let now_us = self.now_us();
        let silent_us = SILENT_MEMBER_GIVES_WAY.as_micros() as u64;
        let silent: Vec<Arc<Link>> = {
            let state = lock(&self.state);
            state
                .rooms
                .members(room)
                .filter_map(|peer| state.links.get(&peer.id))
                .filter(|link| now_us.saturating_sub(link.last_heard_us.load(Relaxed)) > silent_us)
                .cloned()
                .collect()
        };
        for link in &silent {
            info!(%room, id = %link.id, "gave its place to a newcomer after going silent");
            let seconds = SILENT_MEMBER_GIVES_WAY.as_secs();
            let message = format!("nothing heard from you for over {seconds} s while the room was full");
            link.close(self, Closing { code: ErrorCode::Timeout, message });
            self.leave(link.id);
        }
        !silent.is_empty()
    }

    async fn join_once(
        &self,
        room: &str,
        name: &str,
        password: Option<&str>,
        resume: Option<&str>,
    ) -> Result<(Arc<Link>, Arc<Fanout>), Closing> {
        if let Some(stale) = resume.and_then(|resume| self.resumed_link(room, resume)) {
            info!(%room, id = %stale.id, "replaced by a new connection");
            let message = "you joined this room again on another connection, which takes this one's place";
            stale.close(self, Closing { code: ErrorCode::Replaced, message: message.into() });
            self.leave(stale.id);
        }
        if let Some(cluster) = &self.cluster {
            return cluster.join(room, name, password).await;
        }
        let mut state = lock(&self.state);
        let joined = state.rooms.handle_join(room, name, password).map_err(|why| refusal(room, why))?;
        Ok(self.welcome_locked(&mut state, room, joined))
    }

    /// The link in `room` whose `resume` secret this is.
    fn resumed_link(&self, room: &str, resume: &str) -> Option<Arc<Link>> {
        let state = lock(&self.state);
        let id = *state.resume.get(resume)?;
        (state.rooms.room_of(id) == Some(room)).then(|| state.links.get(&id).cloned()).flatten()
    }

    /// Admits a participant the cluster's room record accepted under `id`.
    pub(crate) fn join_admitted(
        &self,
        room: &str,
        name: &str,
        id: ParticipantId,
    ) -> (Arc<Link>, Arc<Fanout>) {
        let mut state = lock(&self.state);
        let joined = state.rooms.handle_admitted(room, name, id);
        self.welcome_locked(&mut state, room, joined)
    }

    /// Welcomes a new member, tells the others, and rebuilds the room's fan-out.
    fn welcome_locked(
        &self,
        state: &mut HubState,
        room: &str,
        joined: crate::rooms::Joined,
    ) -> (Arc<Link>, Arc<Fanout>) {
        let resume = new_resume_secret();
        let link = Arc::new(Link {
            id: joined.id,
            resume: resume.clone(),
            state: Mutex::new(LinkState {
                queue: MediaQueue::new(self.queue_limits(), AudioPolicy::TooSlowWhenStale),
                layers: HashMap::new(),
                closing: None,
            }),
            wake: Notify::new(),
            closed: Notify::new(),
            bytes_in: AtomicU64::new(0),
            last_heard_us: AtomicU64::new(self.now_us()),
            pacer: Mutex::new(VideoPacer::new(Instant::now())),
        });
        let mut peers: Vec<Peer> = state.roster.peers(room).cloned().collect();
        peers.extend(joined.others.iter().cloned());
        let welcome = ServerMessage::Welcome(Welcome {
            id: joined.id,
            room: room.to_owned(),
            peers,
            server_time_us: self.now_us(),
            resume: Some(resume.clone()),
        });
        link.push_control(&welcome, self);
        state.resume.insert(resume, joined.id);
        let announcement = ServerMessage::PeerJoined { peer: joined.peer };
        for other in &joined.others {
            if let Some(other) = state.links.get(&other.id) {
                other.push_control(&announcement, self);
            }
        }
        state.links.insert(joined.id, Arc::clone(&link));
        let clustered = self.cluster.is_some();
        let fanout = Arc::clone(
            state.fanouts.entry(room.to_owned()).or_insert_with(|| Arc::new(Fanout::new(room, clustered))),
        );
        fanout.set_members(
            state.rooms.members(room).filter_map(|peer| state.links.get(&peer.id).cloned()).collect(),
        );
        fanout.remote.store(state.roster.remote_count(room), Relaxed);
        (link, fanout)
    }

    pub(crate) fn leave(&self, id: ParticipantId) {
        let mut state = lock(&self.state);
        if let Some(link) = state.links.remove(&id) {
            state.resume.remove(&link.resume);
        }
        let Some(left) = state.rooms.handle_leave(id) else { return };
        if let Some(cluster) = &self.cluster {
            state.roster.release(&left.room);
            cluster.left(&left.room, id);
        }
        let announcement = ServerMessage::PeerLeft { id };
        let members: Arc<[Arc<Link>]> =
            left.others.iter().filter_map(|other| state.links.get(other).cloned()).collect();
        for other in members.iter() {
            other.push_control(&announcement, self);
        }
        if members.is_empty() {
            state.fanouts.remove(&left.room);
        } else if let Some(fanout) = state.fanouts.get(&left.room) {
            fanout.set_members(members);
        }
        info!(room = %left.room, id = %id, name = %left.peer.name, "left");
    }

    fn set_state(&self, id: ParticipantId, update: chinwag_proto::StateUpdate) {
        let mut state = lock(&self.state);
        let Some((peer_state, others)) = state.rooms.handle_state(id, update) else { return };
        if let Some(cluster) = &self.cluster
            && let Some(room) = state.rooms.room_of(id)
        {
            cluster.state_changed(room, peer_state);
        }
        let announcement = ServerMessage::PeerState(peer_state);
        for other in others {
            if let Some(other) = state.links.get(&other) {
                other.push_control(&announcement, self);
            }
        }
    }

    pub(crate) fn max_per_room(&self) -> usize {
        self.config.max_participants
    }

    pub(crate) fn id_in_use(&self, id: ParticipantId) -> bool {
        lock(&self.state).rooms.contains(id)
    }

    pub(crate) fn local_peers(&self, room: &str) -> Vec<Peer> {
        lock(&self.state).rooms.members(room).cloned().collect()
    }

    pub(crate) fn roster_acquire(&self, room: &str) {
        lock(&self.state).roster.acquire(room);
    }

    pub(crate) fn roster_release(&self, room: &str) {
        lock(&self.state).roster.release(room);
    }

    pub(crate) fn roster_rooms(&self) -> Vec<String> {
        lock(&self.state).roster.rooms().map(str::to_owned).collect()
    }

    pub(crate) fn roster_is_synced(&self, room: &str) -> bool {
        lock(&self.state).roster.is_synced(room)
    }

    /// Holds presence for `room` while its record is read; false when the room is not tracked.
    pub(crate) fn roster_begin_sync(&self, room: &str) -> bool {
        let mut state = lock(&self.state);
        state.roster.begin_sync(room);
        state.roster.is_tracked(room)
    }

    pub(crate) fn roster_sync(&self, room: &str, record: Option<&RoomRecord>, alive: &AliveNodes) {
        let Some(cluster) = &self.cluster else { return };
        let mut state = lock(&self.state);
        let changes = state.roster.sync(room, record, &cluster.instance, |node| alive.is_alive(node));
        self.announce_locked(&state, room, changes);
    }

    pub(crate) fn roster_password(&self, room: &str) -> Option<crate::cluster::record::PasswordHash> {
        lock(&self.state).roster.password(room).cloned()
    }

    pub(crate) fn roster_end_sync(&self, room: &str) {
        let mut state = lock(&self.state);
        let changes = state.roster.end_sync(room);
        self.announce_locked(&state, room, changes);
    }

    pub(crate) fn admit_offline(
        &self,
        room: &str,
        password: Option<&str>,
    ) -> Option<Result<(), JoinRefusal>> {
        let state = lock(&self.state);
        let locals = state.rooms.members(room).count();
        state.roster.admit_offline(room, password, locals, self.config.max_participants)
    }

    /// Presence from another relay.
    pub(crate) fn remote_presence(&self, room: &str, presence: Presence) {
        let mut state = lock(&self.state);
        let changes = state.roster.handle_presence(room, presence);
        self.announce_locked(&state, room, changes);
    }

    /// The relays that hold participants in this relay's rooms.
    pub(crate) fn roster_nodes(&self) -> Vec<String> {
        lock(&self.state).roster.nodes().into_iter().map(str::to_owned).collect()
    }

    /// Another relay died: its participants leave this relay's rooms.
    pub(crate) fn node_dead(&self, node: &str) {
        let mut state = lock(&self.state);
        let gone = state.roster.node_dead(node);
        for (room, id) in gone {
            self.announce_locked(&state, &room, vec![Change::Left(id)]);
        }
    }

    /// Tells this relay's members of `room` about changes among the other relays' members.
    fn announce_locked(&self, state: &HubState, room: &str, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        if let Some(fanout) = state.fanouts.get(room) {
            fanout.remote.store(state.roster.remote_count(room), Relaxed);
        }
        for change in changes {
            let message = match change {
                Change::Joined(peer) => {
                    info!(%room, id = %peer.id, name = %peer.name, "joined on another relay");
                    ServerMessage::PeerJoined { peer }
                }
                Change::Left(id) => {
                    info!(%room, %id, "left on another relay");
                    ServerMessage::PeerLeft { id }
                }
                Change::State(peer_state) => ServerMessage::PeerState(peer_state),
            };
            for member in state.rooms.members(room) {
                if let Some(link) = state.links.get(&member.id) {
                    link.push_control(&message, self);
                }
            }
        }
    }

    /// A frame from a participant on another relay, for this relay's members of `room`.
    pub(crate) fn remote_media(&self, room: &str, kind: MediaKind, sender: ParticipantId, frame: Bytes) {
        let Some(fanout) = lock(&self.state).fanouts.get(room).cloned() else { return };
        let now = Instant::now();
        let layer = video_layer(&frame);
        for member in fanout.members().iter() {
            member.push_media(now, kind, layer, sender, frame.clone(), self);
        }
    }

    fn gauges(&self) -> Gauges {
        let state = lock(&self.state);
        let mut gauges = Gauges {
            rooms: state.rooms.room_count(),
            participants: state.rooms.participant_count(),
            ..Gauges::default()
        };
        for link in state.links.values() {
            let link_state = lock(&link.state);
            let (audio, video) = link_state.queue.queued_frames();
            let bytes = link_state.queue.queued_bytes();
            gauges.queued_audio_frames += audio;
            gauges.queued_video_frames += video;
            gauges.queued_bytes += bytes;
            gauges.largest_queue_bytes = gauges.largest_queue_bytes.max(bytes);
        }
        gauges
    }
}

impl Link {
    fn push_control(&self, message: &ServerMessage, hub: &Hub) {
        let mut state = lock(&self.state);
        if state.closing.is_some() {
            return;
        }
        match state.queue.push_control(message.to_json()) {
            Pushed::TooSlow => self.close_locked(&mut state, hub, too_slow()),
            Pushed::QueuedDroppingOldAudio(n) => hub.metrics.dropped(DropReason::AudioQueueFull, n as usize),
            _ => {}
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Queues `frame` of `sender`'s for this receiver; `layer` is the layer of a video frame.
    fn push_media(
        &self,
        now: Instant,
        kind: MediaKind,
        layer: VideoLayer,
        sender: ParticipantId,
        frame: Bytes,
        hub: &Hub,
    ) {
        let mut state = lock(&self.state);
        if state.closing.is_some() {
            return;
        }
        if kind == MediaKind::Video && !self.wants_layer(now, &mut state, sender, layer, frame.len()) {
            return;
        }
        let pushed = match kind {
            MediaKind::Audio => state.queue.push_audio(now, sender, frame),
            MediaKind::Video => state.queue.push_video(now, sender, frame),
        };
        match pushed {
            Pushed::Queued => {}
            Pushed::QueuedDroppingOldAudio(n) => hub.metrics.dropped(DropReason::AudioQueueFull, n as usize),
            Pushed::ReplacedOlderVideo => hub.metrics.dropped(DropReason::VideoSuperseded, 1),
            Pushed::DroppedVideoOverBudget => {
                hub.metrics.dropped(DropReason::VideoQueueFull, 1);
                return;
            }
            Pushed::DroppedOversized => {
                // One frame larger than a receiver's whole budget is that frame's problem,
                // never a verdict on the receiver.
                hub.metrics.dropped(DropReason::FrameTooLarge, 1);
                return;
            }
            Pushed::TooSlow => {
                hub.metrics.dropped(DropReason::ReceiverTooSlow, 1);
                self.close_locked(&mut state, hub, too_slow());
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Whether this receiver gets a `len`-byte video frame of `sender`'s `layer`: see
    /// [`Layers::handle_frame`].
    fn wants_layer(
        &self,
        now: Instant,
        state: &mut LinkState,
        sender: ParticipantId,
        layer: VideoLayer,
        len: usize,
    ) -> bool {
        let budget = lock(&self.pacer).video_bps() / 8.0 * LAYER_FRAME_TIME.as_secs_f64();
        state.layers.entry(sender).or_default().handle_frame(now, layer, len, budget)
    }

    /// Asks the writer to send `closing` as an error and close, dropping whatever is queued.
    fn close(&self, hub: &Hub, closing: Closing) {
        self.close_locked(&mut lock(&self.state), hub, closing);
        self.wake.notify_one();
    }

    fn close_locked(&self, state: &mut LinkState, hub: &Hub, closing: Closing) {
        if state.closing.is_none() {
            hub.metrics.error_sent(closing.code);
            self.closed.notify_one();
            let reason = match closing.code {
                ErrorCode::TooSlow => DropReason::ReceiverTooSlow,
                _ => DropReason::ReceiverClosed,
            };
            hub.metrics.dropped(reason, state.queue.clear() as usize);
            state.closing = Some(closing);
        }
    }

    /// Moves up to [`WRITE_BATCH`] items into `batch`: control and audio, then at most one
    /// video frame, if the kernel has room and the link's pace allows. Returns why to close,
    /// once it is time, and how long until video held back may go.
    fn take_batch(
        &self,
        batch: &mut Vec<Next<ParticipantId>>,
        now: Instant,
        unsent: &Unsent,
    ) -> (Option<Closing>, Option<Duration>) {
        let mut state = lock(&self.state);
        while batch.len() < WRITE_BATCH {
            let Some(out) = state.queue.poll_urgent() else { break };
            batch.push(out);
        }
        let mut video_wait = None;
        if batch.len() < WRITE_BATCH
            && let Some(len) = state.queue.peek_video().map(|queued| queued.frame.len())
        {
            let may_go = unsent.video_may_go();
            let mut pacer = lock(&self.pacer);
            pacer.handle_held(now, !may_go);
            if !may_go {
                video_wait = Some(Duration::from_millis(2));
            } else {
                match pacer.poll_video(now, len) {
                    Ok(()) => batch.extend(state.queue.pop_video().map(Next::Media)),
                    Err(wait) => video_wait = Some(wait),
                }
            }
        }
        (state.closing.clone(), video_wait)
    }
}

/// 128 random bits in hex: a secret nobody else can guess.
fn new_resume_secret() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// The video layer `frame` belongs to (the full one for audio, and for a frame that does not
/// decode).
fn video_layer(frame: &[u8]) -> VideoLayer {
    MediaHeader::decode(frame).map_or(VideoLayer::Full, |(header, _)| header.flags.layer())
}

fn too_slow() -> Closing {
    Closing {
        code: ErrorCode::TooSlow,
        message: "your connection did not keep up with the call; check your network and rejoin".into(),
    }
}

fn ws_config(hub: &Hub) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(hub.config.max_message_bytes * 2 + (64 << 10))
        .max_message_size(Some(hub.config.max_message_bytes))
        .max_frame_size(Some(hub.config.max_message_bytes))
}

/// One connection from its first byte to its last.
async fn serve<S>(
    stream: S,
    hub: Arc<Hub>,
    mut stop: watch::Receiver<bool>,
    unsent: Unsent,
    mut ticket: SourceTicket,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + hub.config.join_timeout;
    let handshake = async {
        let mut stream = stream;
        let head = http::read_head(&mut stream).await.ok()?;
        if head.route != Route::WebSocket {
            answer_plain(&head.route, &mut stream, &hub).await;
            return None;
        }
        let tls = hub.config.tls.is_some();
        if !http::origin_allowed(head.origin.as_deref(), head.host.as_deref(), tls, &hub.config.allow_origins)
        {
            let origin = head.origin.as_deref().unwrap_or_default();
            debug!(%origin, "refused a web page from another origin");
            hub.metrics.connection_refused(RefusedReason::Origin);
            let body = format!(
                "pages from {origin} may not connect to this relay; its operator can allow them with --allow-origin\n"
            );
            let _ = http::respond(&mut stream, "403 Forbidden", "text/plain", &body).await;
            return None;
        }
        // Every frame from here on counts against the connection's limits, before and after
        // joining, whatever its kind.
        let limiter =
            RateLimiter::new(Instant::now(), hub.config.max_messages_per_sec, hub.config.max_bytes_per_sec);
        let meter = FrameMeter::new(limiter, head.len);
        let stream = Metered::new(Prefixed::new(head.bytes, stream), meter);
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config(&hub))).await.ok()
    };
    // Until the upgrade a client cannot be sent an error, so running out of time only closes
    // the socket; after it, `wait_for_join` says why it gives up, by the same deadline.
    let joined = tokio::select! {
        joined = async {
            let ws = tokio::time::timeout_at(deadline, handshake).await.ok()??;
            wait_for_join(ws, &hub, deadline, ticket.source).await
        } => match joined {
            Some(joined) => joined,
            None => return,
        },
        _ = stop.changed() => return,
    };
    ticket.joined();
    run_call(joined, hub, stop, unsent).await;
}

/// Answers a plain HTTP request: `/healthz`, `/metrics`, or an error.
async fn answer_plain<S: AsyncWrite + Unpin>(route: &Route, stream: &mut S, hub: &Hub) {
    let (status, content_type, body) = match route {
        Route::Health => {
            let full = hub.metrics.open_connections() >= hub.config.max_connections as u64;
            let full = if full { "full: at its connection limit; calls on this relay go on\n" } else { "" };
            match hub.cluster.as_ref().map(|cluster| cluster.health()) {
                None => ("200 OK", "text/plain", format!("ok\n{full}")),
                Some(Ok(cluster)) => ("200 OK", "text/plain", format!("ok\n{cluster}{full}")),
                Some(Err(problem)) => (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("degraded: {problem}; calls on this relay go on\n{full}"),
                ),
            }
        }
        Route::Metrics => {
            let mut body = hub.metrics.render(&hub.gauges());
            if let Some(cluster) = &hub.cluster {
                cluster.render_metrics(&mut body);
            }
            ("200 OK", "text/plain; version=0.0.4", body)
        }
        Route::WebSocket => {
            hub.metrics.error_sent(ErrorCode::ServerFull);
            ("503 Service Unavailable", "text/plain", full_message().into())
        }
        Route::NotFound => (
            "404 Not Found",
            "text/plain",
            "not found: Chinwag clients connect to /v1; also /healthz and /metrics\n".into(),
        ),
        Route::BadRequest => ("400 Bad Request", "text/plain", "bad request\n".into()),
    };
    let _ = http::respond(stream, status, content_type, &body).await;
}

fn full_message() -> &'static str {
    "the relay has as many connections as it allows; try again later\n"
}

/// A connection that arrived while the relay was at its connection limit: it is read just far
/// enough to answer `/healthz` and `/metrics`, so that monitoring and load balancers still
/// see a relay that is full, not one that is dead; anything else is told the relay is full.
async fn answer_while_full(tcp: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>, hub: Arc<Hub>) {
    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, hub: &Hub) {
        if let Ok(head) = http::read_head(&mut stream).await {
            answer_plain(&head.route, &mut stream, hub).await;
        }
    }
    let answered = async {
        match tls {
            None => answer(tcp, &hub).await,
            Some(acceptor) => {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    answer(tls, &hub).await;
                }
            }
        }
    };
    let _ = tokio::time::timeout(WHILE_FULL_GRACE, answered).await;
}

/// Counts a connection against its source for as long as it lives.
struct SourceTicket {
    hub: Arc<Hub>,
    source: Source,
    handshaking: bool,
}

impl SourceTicket {
    fn joined(&mut self) {
        if std::mem::replace(&mut self.handshaking, false) {
            lock(&self.hub.sources).handle_joined(self.source);
        }
    }
}

impl Drop for SourceTicket {
    fn drop(&mut self) {
        lock(&self.hub.sources).handle_closed(self.source, self.handshaking);
    }
}

struct JoinedConnection<S> {
    ws: WebSocketStream<S>,
    link: Arc<Link>,
    fanout: Arc<Fanout>,
}

/// Waits for a valid `join`; on anything else, sends an error and closes. `None` when the
/// connection ended without joining.
async fn wait_for_join<S>(
    mut ws: WebSocketStream<S>,
    hub: &Hub,
    deadline: tokio::time::Instant,
    source: Source,
) -> Option<JoinedConnection<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let first = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => {
                let seconds = hub.config.join_timeout.as_secs_f64();
                let message = format!("no join message within {seconds} s of connecting");
                refuse(&mut ws, hub, ErrorCode::Timeout, message).await;
                return None;
            }
            Ok(None) | Ok(Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed))) => return None,
            Ok(Some(Err(WsError::Capacity(_)))) => {
                refuse(&mut ws, hub, ErrorCode::TooLarge, too_large_message(hub)).await;
                return None;
            }
            Ok(Some(Err(WsError::Io(error)))) if is_rate_exceeded(&error) => {
                refuse(&mut ws, hub, ErrorCode::RateLimited, rate_limited_message(hub)).await;
                return None;
            }
            Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Text(text)))) => break text,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(_))) => {
                refuse(&mut ws, hub, ErrorCode::BadRequest, "the first message must be a join".into()).await;
                return None;
            }
        }
    };
    let join = match parse_client_message(&first) {
        Ok(ClientMessage::Join(join)) => join,
        Ok(_) => {
            refuse(&mut ws, hub, ErrorCode::BadRequest, "the first message must be a join".into()).await;
            return None;
        }
        Err(ProtoError::UnsupportedVersion(version)) => {
            let message = format!(
                "this relay speaks protocol version {}, the client version {version}; update the client or the relay",
                chinwag_proto::PROTOCOL_VERSION
            );
            refuse(&mut ws, hub, ErrorCode::UnsupportedVersion, message).await;
            return None;
        }
        Err(error) => {
            refuse(
                &mut ws,
                hub,
                ErrorCode::BadRequest,
                format!("the join message was not understood: {error}"),
            )
            .await;
            return None;
        }
    };
    let checked = validate_room(&join.room, chinwag_proto::MAX_ROOM_CHARS)
        .and_then(|()| validate_name(&join.name, hub.config.max_name_chars))
        .and_then(|()| validate_password(join.password.as_deref()));
    if let Err(error) = checked {
        let message = match error {
            ProtoError::Invalid { field: "name", reason: "too long" } => {
                format!("invalid name: longer than {} characters", hub.config.max_name_chars)
            }
            other => other.to_string(),
        };
        refuse(&mut ws, hub, ErrorCode::BadRequest, message).await;
        return None;
    }
    if hub.config.require_token
        && let Err(problem) = check_token(hub, join.token.as_deref(), &join.room, &join.name)
    {
        let message = match problem {
            None => "this relay admits only joins with a token; ask whoever runs it for one".to_owned(),
            Some(error) => format!("the join token was refused: {error}; ask for a new one"),
        };
        refuse(&mut ws, hub, ErrorCode::Unauthorized, message).await;
        return None;
    }
    // Refused before the password is looked at, so that no answer tells a guess right.
    let attempt = lock(&hub.passwords).handle_attempt(Instant::now(), source, &join.room);
    if let Err(locked) = attempt {
        let wait = human_duration(locked.retry_after());
        let message = match locked {
            Locked::Source { .. } => {
                format!("too many wrong passwords from your address; try again in {wait}")
            }
            Locked::Room { .. } => {
                format!("too many wrong passwords for room \"{}\" lately; try again in {wait}", join.room)
            }
        };
        debug!(%source, room = %join.room, ?locked, "a join waits for its password to be tried");
        let error = ServerMessage::error_retry_after(ErrorCode::RateLimited, message, locked.retry_after());
        send_refusal(&mut ws, hub, ErrorCode::RateLimited, error).await;
        return None;
    }
    match hub.join(&join.room, &join.name, join.password.as_deref(), join.resume.as_deref()).await {
        Ok((link, fanout)) => {
            info!(room = %join.room, id = %link.id, name = %join.name, "joined");
            Some(JoinedConnection { ws, link, fanout })
        }
        Err(closing) => {
            if closing.code == ErrorCode::WrongPassword {
                lock(&hub.passwords).handle_wrong_password(Instant::now(), source, &join.room);
            }
            refuse(&mut ws, hub, closing.code, closing.message).await;
            None
        }
    }
}

/// Whether `token` admits `name` into `room`: `Err(None)` when there is no token.
fn check_token(hub: &Hub, token: Option<&str>, room: &str, name: &str) -> Result<(), Option<TokenError>> {
    let key = hub.config.token_key.as_ref().ok_or(None)?;
    let grant = key.verify(token.ok_or(None)?, SystemTime::now())?;
    Ok(grant.admits(room, name)?)
}

/// `d` as a person would say it, rounded up: "42 s", "15 min".
fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if seconds < 120 { format!("{seconds} s") } else { format!("{} min", seconds.div_ceil(60)) }
}

fn rate_limited_message(hub: &Hub) -> String {
    format!(
        "you sent more than {} WebSocket frames or {} bytes per second",
        hub.config.max_messages_per_sec, hub.config.max_bytes_per_sec
    )
}

fn too_large_message(hub: &Hub) -> String {
    format!("a message was larger than this relay's limit of {} bytes", hub.config.max_message_bytes)
}

/// The close code that goes with an error code.
fn close_code_for(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::TooLarge => close_code::MESSAGE_TOO_BIG,
        ErrorCode::ShuttingDown => close_code::GOING_AWAY,
        ErrorCode::RoomFull | ErrorCode::ServerFull | ErrorCode::Unavailable => close_code::TRY_AGAIN_LATER,
        _ => close_code::POLICY_VIOLATION,
    }
}

/// Sends an error and a close frame before the connection has a writer of its own.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    hub: &Hub,
    code: ErrorCode,
    message: String,
) {
    send_refusal(ws, hub, code, ServerMessage::error(code, message)).await;
}

/// Sends `error` (an error message with `code`) and a close frame.
async fn send_refusal<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    hub: &Hub,
    code: ErrorCode,
    error: ServerMessage,
) {
    hub.metrics.error_sent(code);
    let goodbye = async {
        ws.feed(Message::text(error.to_json())).await?;
        ws.feed(Message::Close(Some(close_frame(code)))).await?;
        ws.flush().await
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
}

fn close_frame(code: ErrorCode) -> CloseFrame {
    CloseFrame { code: close_code_for(code).into(), reason: Utf8Bytes::from_static(code.as_str()) }
}

/// A joined connection: read and write until either side ends, then leave the room.
async fn run_call<S>(
    joined: JoinedConnection<S>,
    hub: Arc<Hub>,
    mut stop: watch::Receiver<bool>,
    unsent: Unsent,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let JoinedConnection { ws, link, fanout } = joined;
    let (sink, mut stream) = ws.split();
    let relay_closed = {
        let reader = read_loop(&mut stream, &link, &fanout, &hub);
        let writer = write_loop(sink, &link, &hub, unsent);
        tokio::pin!(reader, writer);
        tokio::select! {
            ending = &mut reader => match ending {
                Some(closing) => {
                    link.close(&hub, closing);
                    let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
                    true
                }
                None => false,
            },
            // The writer ends on its own when the socket fails or after a close it was asked for.
            () = &mut writer => lock(&link.state).closing.is_some(),
            // Another task closed the link (this receiver is too slow): its writer may be stuck
            // on a full socket, so it gets a moment to say why and is then given up on.
            () = link.closed.notified() => {
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
                true
            }
            _ = stop.changed() => {
                let message = "the relay is shutting down; rejoin in a moment".into();
                link.close(&hub, Closing { code: ErrorCode::ShuttingDown, message });
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
                true
            }
        }
    };
    hub.leave(link.id);
    if relay_closed {
        // Finish the closing handshake: read until the client's close frame, so that the
        // socket is not dropped with unread data (which would reset it and could destroy the
        // error message before the client has read it).
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(message)) = stream.next().await {
                if message.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}

/// Handles what a joined client sends. Returns why the connection should close with an
/// error, or `None` when the client went away.
async fn read_loop<S>(
    stream: &mut futures_util::stream::SplitStream<WebSocketStream<S>>,
    link: &Link,
    fanout: &Fanout,
    hub: &Hub,
) -> Option<Closing>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message = match tokio::time::timeout(hub.config.idle_timeout, stream.next()).await {
            Err(_) => {
                let message =
                    format!("nothing heard from you for {} s", hub.config.idle_timeout.as_secs_f64());
                return Some(Closing { code: ErrorCode::Timeout, message });
            }
            Ok(None) => return None,
            Ok(Some(Err(WsError::Capacity(
                CapacityError::MessageTooLong { .. } | CapacityError::TooManyHeaders,
            )))) => {
                return Some(Closing { code: ErrorCode::TooLarge, message: too_large_message(hub) });
            }
            Ok(Some(Err(WsError::Io(error)))) if is_rate_exceeded(&error) => {
                return Some(Closing { code: ErrorCode::RateLimited, message: rate_limited_message(hub) });
            }
            Ok(Some(Err(error))) => {
                debug!(id = %link.id, %error, "connection ended");
                return None;
            }
            Ok(Some(Ok(message))) => message,
        };
        let now = Instant::now();
        link.bytes_in.fetch_add(message.len() as u64, Ordering::Relaxed);
        link.last_heard_us.store(hub.now_us(), Ordering::Relaxed);
        match message {
            Message::Binary(frame) => forward_media(now, frame, link, fanout, hub),
            Message::Text(text) => match parse_client_message(&text) {
                Ok(ClientMessage::Ping { client_time_us, received_bytes }) => {
                    let server_time_us = hub.now_us();
                    if let Some(bytes) = received_bytes {
                        lock(&link.pacer).handle_received(server_time_us, bytes);
                    }
                    let received_bytes = Some(link.bytes_in.load(Ordering::Relaxed));
                    link.push_control(
                        &ServerMessage::Pong { client_time_us, server_time_us, received_bytes },
                        hub,
                    );
                }
                Ok(ClientMessage::State(update)) => hub.set_state(link.id, update),
                Ok(ClientMessage::Join(_)) => {
                    let message = "already joined: open another connection to join another room".into();
                    return Some(Closing { code: ErrorCode::BadRequest, message });
                }
                Err(error) => {
                    let message = format!("a control message was not understood: {error}");
                    return Some(Closing { code: ErrorCode::BadRequest, message });
                }
            },
            Message::Close(_) => return None,
            // The answer to one of the relay's own pings, which carry its clock.
            Message::Pong(payload) => {
                if let Ok(sent) = <[u8; 8]>::try_from(payload.as_ref()) {
                    let rtt = Duration::from_micros(hub.now_us().saturating_sub(u64::from_be_bytes(sent)));
                    lock(&link.pacer).handle_rtt(now, rtt);
                }
            }
            Message::Ping(_) | Message::Frame(_) => {}
        }
    }
}

/// Stamps the real sender id on a frame and queues it for everyone else in the room.
fn forward_media(now: Instant, frame: Bytes, link: &Link, fanout: &Fanout, hub: &Hub) {
    let mut frame = frame.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    let header = match rewrite_sender_id(&mut frame, link.id) {
        Ok(header) => header,
        Err(error) => {
            debug!(id = %link.id, %error, "dropped a media frame");
            hub.metrics.dropped(DropReason::BadHeader, 1);
            return;
        }
    };
    hub.metrics.received(header.kind, frame.len());
    let limit = match header.kind {
        MediaKind::Audio => hub.config.max_audio_frame_bytes,
        MediaKind::Video => hub.config.max_video_frame_bytes,
    };
    if frame.len() > limit {
        // Queued, one such frame would take the place of many good ones in every receiver's
        // queue; it is the sender's problem alone.
        debug!(id = %link.id, kind = header.kind.as_str(), len = frame.len(), "dropped an oversized frame");
        hub.metrics.dropped(DropReason::FrameTooLarge, 1);
        return;
    }
    let frame = frame.freeze();
    let layer = header.flags.layer();
    for member in fanout.members().iter().filter(|member| member.id != link.id) {
        member.push_media(now, header.kind, layer, link.id, frame.clone(), hub);
    }
    if fanout.remote.load(Relaxed) > 0
        && let (Some(cluster), Some(subjects)) = (&hub.cluster, &fanout.subjects)
    {
        cluster.publish_media(now, subjects, header.kind, link.id, frame);
    }
}

/// Drains this connection's queue onto its socket, pinging when there is nothing to send.
/// Ends when the socket fails or after sending the closing error and close frame.
async fn write_loop<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    link: &Link,
    hub: &Hub,
    unsent: Unsent,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut next_ping = tokio::time::Instant::now() + hub.config.ping_interval;
    let mut last_video: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let (closing, video_wait) = link.take_batch(&mut batch, now, &unsent);
        let ping_due = tokio::time::Instant::now() >= next_ping;
        if batch.is_empty() && closing.is_none() && !ping_due {
            let video_due = async {
                match video_wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = link.wake.notified() => {}
                () = tokio::time::sleep_until(next_ping) => {}
                () = video_due => {}
            }
            continue;
        }
        let written = async {
            if ping_due {
                // While video flows, the pings that measure the receiver's link come often; the
                // rest of the time they only keep the connection alive.
                let video_recently =
                    last_video.is_some_and(|at| now.saturating_duration_since(at) < VIDEO_PINGS_FOR);
                let interval = if video_recently {
                    VIDEO_PING_INTERVAL.min(hub.config.ping_interval)
                } else {
                    hub.config.ping_interval
                };
                next_ping = tokio::time::Instant::now() + interval;
                sink.feed(Message::Ping(Bytes::copy_from_slice(&hub.now_us().to_be_bytes()))).await?;
            }
            for out in batch.drain(..) {
                match out {
                    Next::Control(text) => sink.feed(Message::text(text)).await?,
                    Next::Media(Queued { kind, frame, .. }) => {
                        let len = frame.len();
                        sink.feed(Message::Binary(frame)).await?;
                        hub.metrics.sent(kind, len);
                        if kind == MediaKind::Video {
                            last_video = Some(now);
                            // Video has started: measuring the link cannot wait for the next
                            // keep-alive, which may be seconds away.
                            next_ping = next_ping.min(tokio::time::Instant::now() + VIDEO_PING_INTERVAL);
                        }
                        lock(&link.pacer).handle_written(now, len, kind == MediaKind::Audio);
                    }
                }
            }
            sink.flush().await
        };
        if written.await.is_err() {
            return;
        }
        if let Some(closing) = closing {
            debug!(id = %link.id, code = %closing.code, "closing");
            let goodbye = async {
                sink.feed(Message::text(ServerMessage::error(closing.code, closing.message).to_json()))
                    .await?;
                sink.feed(Message::Close(Some(close_frame(closing.code)))).await?;
                sink.flush().await
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
            return;
        }
    }
}
