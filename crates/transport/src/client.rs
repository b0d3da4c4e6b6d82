//! The connection thread: connect, join, read, write, ping, reconnect.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chinwag_proto::{
    ClientMessage, ErrorCode, HEADER_LEN, Join, MediaHeader, MediaKind, ParticipantId, Peer, PeerState,
    ServerMessage, StateUpdate, VideoLayer, parse_server_message,
};
use chinwag_queue::{AudioPolicy, MediaQueue, Next, Pushed, QueueLimits};
use chinwag_rate::LinkEstimator;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, info};

use crate::socket::{Unsent, VIDEO_GATE_BYTES};
use crate::{RelayClock, TransportError, server_url};

/// What may wait to be sent while the socket is busy. Audio older than half a second is
/// dropped (late audio is worse than none); one video frame waits at a time.
const QUEUE_LIMITS: QueueLimits =
    QueueLimits { audio_bytes: 64 << 10, audio_max_age: Duration::from_millis(500), video_bytes: 4 << 20 };
/// Audio and control events waiting for the caller beyond which new audio is dropped.
const EVENT_BACKLOG: usize = 2000;
/// Video frames waiting for the decoder beyond which new ones are dropped.
const VIDEO_BACKLOG: usize = 8;
/// How long the TCP connection, TLS and the WebSocket upgrade may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a video frame held back by the kernel's unsent bytes checks again.
const GATE_POLL: Duration = Duration::from_millis(2);
/// How long leaving waits for the last queued messages and the goodbye to go out.
const LEAVE_GRACE: Duration = Duration::from_millis(500);
/// How long the relay has to answer `join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The relay address as a person typed it (see [`server_url`]).
    pub server: String,
    pub room: String,
    pub name: String,
    pub password: Option<String>,
    /// A join token, for relays that admit only token holders.
    pub token: Option<String>,
    /// A PEM file with extra CA certificates to trust for `wss://`, besides the system's.
    pub ca_file: Option<PathBuf>,
    pub ping_interval: Duration,
    /// Keep trying when the very first connection fails for a reason that may pass (a relay
    /// still starting, a timeout), rather than reporting [`TransportEvent::Failed`]. A name
    /// that does not resolve or a refused connection fails the first attempt either way.
    pub retry_first_connect: bool,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Run first on the connection thread: a caller can raise its priority, since audio
    /// arrives through it.
    pub thread_setup: Option<ThreadSetup>,
}

/// Something to run at the start of the connection thread.
#[derive(Clone)]
pub struct ThreadSetup(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for ThreadSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadSetup")
    }
}

impl TransportConfig {
    pub fn new(server: impl Into<String>, room: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            room: room.into(),
            name: name.into(),
            password: None,
            token: None,
            ca_file: None,
            // Four times a second: once a second would do for the clock, but rate control
            // needs to see a queue building within a fraction of a second.
            ping_interval: Duration::from_millis(250),
            retry_first_connect: false,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            thread_setup: None,
        }
    }
}

/// What happened on the connection.
#[derive(Debug, Clone)]
pub enum TransportEvent {
    /// Joined the room; `rejoined` after a reconnection, when `peers` replaces every peer
    /// known before.
    Joined {
        id: ParticipantId,
        room: String,
        peers: Vec<Peer>,
        rejoined: bool,
    },
    PeerJoined(Peer),
    PeerLeft(ParticipantId),
    PeerState(PeerState),
    /// An audio frame from a peer. Video arrives apart, through [`Transport::video`].
    Audio(ReceivedMedia),
    /// A ping was answered after `rtt`.
    Rtt(Duration),
    /// The connection dropped or could not be made; the next attempt follows in `retry_in`.
    Disconnected {
        error: TransportError,
        retry_in: Duration,
    },
    /// The transport gave up: retrying cannot help, or the first connection failed.
    Failed(TransportError),
    /// [`Transport::leave`] finished.
    Left,
}

/// A media frame from a peer, with the local instant it arrived.
#[derive(Debug, Clone)]
pub struct ReceivedMedia {
    pub header: MediaHeader,
    pub payload: Bytes,
    pub arrived: Instant,
}

/// Counters of what the connection dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Audio that waited too long in the send queue (the socket was behind).
    pub audio_dropped: u64,
    /// Video frames replaced by a newer one before they went out.
    pub video_replaced: u64,
    /// Audio received while the caller was too far behind to take it.
    pub audio_received_dropped: u64,
    /// Video received while the decoder was too far behind to take it.
    pub video_received_dropped: u64,
    /// Bytes the socket accepted since the transport started.
    pub bytes_sent: u64,
    /// Bytes received since the transport started.
    pub bytes_received: u64,
}

/// What the way to the relay looks like now, for rate control.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkState {
    /// How much longer than its quickest recent trip data takes to reach the relay now.
    pub queue_delay: Option<Duration>,
    /// Bits per second the relay received from us recently (or the socket took, from an older
    /// relay that does not say).
    pub delivered_bps: Option<f64>,
    /// The smoothed round trip.
    pub rtt: Option<Duration>,
}

/// A handle to one participant's connection. Dropping it leaves the room without waiting.
pub struct Transport {
    shared: Arc<Shared>,
    events: Receiver<TransportEvent>,
    video: Receiver<ReceivedMedia>,
    /// Disconnects (never sends) when the connection thread ends.
    finished: Receiver<()>,
}

struct Shared {
    /// Tagged with whether a video frame is of the small layer: a newer frame replaces an
    /// older one of its own layer only.
    queue: Mutex<MediaQueue<VideoLayer>>,
    /// The last state sent, repeated after every rejoin.
    state: Mutex<Option<StateUpdate>>,
    wake: Notify,
    clock: Mutex<RelayClock>,
    leaving: watch::Sender<bool>,
    connected: AtomicBool,
    audio_received_dropped: AtomicU64,
    video_received_dropped: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    /// The uplink as this session has measured it.
    link: Mutex<LinkEstimator>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Transport {
    /// Starts connecting in the background. Errors in the address or CA file are reported at
    /// once; everything else arrives as events.
    pub fn start(config: TransportConfig) -> Result<Transport, TransportError> {
        let url = server_url(&config.server)?;
        let connector = tls_connector(&url, config.ca_file.as_ref())?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(MediaQueue::new(QUEUE_LIMITS, AudioPolicy::DropOldest)),
            state: Mutex::new(None),
            wake: Notify::new(),
            clock: Mutex::new(RelayClock::new(Instant::now())),
            leaving: watch::Sender::new(false),
            connected: AtomicBool::new(false),
            audio_received_dropped: AtomicU64::new(0),
            video_received_dropped: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            link: Mutex::new(LinkEstimator::default()),
        });
        let (events_tx, events) = crossbeam_channel::unbounded();
        let (video_tx, video) = crossbeam_channel::bounded(VIDEO_BACKLOG);
        let (finished_tx, finished) = crossbeam_channel::bounded::<()>(0);
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("chinwag-net".into())
            .spawn(move || {
                let _finished = finished_tx;
                if let Some(setup) = &config.thread_setup {
                    (setup.0)();
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime with IO and timers builds on every supported platform");
                let routes = Routes { events: events_tx, video: video_tx };
                runtime.block_on(run(config, url, connector, &thread_shared, &routes));
            })
            .expect("the OS lets us start a thread");
        Ok(Transport { shared, events, video, finished })
    }

    /// Everything that happens on the connection, in order, but video.
    pub fn events(&self) -> &Receiver<TransportEvent> {
        &self.events
    }

    /// Video frames from peers, for the decoder; when it falls behind, new frames are dropped.
    pub fn video(&self) -> &Receiver<ReceivedMedia> {
        &self.video
    }

    /// Queues a media frame; returns whether it was queued. `header.sender` is ignored (the
    /// relay writes it). Audio waits in a short queue; a video frame replaces one of its layer
    /// not yet sent. Nothing is queued while disconnected: stale media is worse than none.
    pub fn send_media(&self, header: &MediaHeader, payload: &[u8]) -> bool {
        if !self.shared.connected.load(Ordering::Relaxed) {
            return false;
        }
        let frame = Bytes::from(chinwag_proto::encode_frame(header, payload));
        let now = Instant::now();
        let pushed = {
            let mut queue = lock(&self.shared.queue);
            match header.kind {
                MediaKind::Audio => queue.push_audio(now, VideoLayer::Full, frame),
                MediaKind::Video => queue.push_video(now, header.flags.layer(), frame),
            }
        };
        let queued = !matches!(pushed, Pushed::DroppedOversized | Pushed::DroppedVideoOverBudget);
        if queued {
            self.shared.wake.notify_one();
        }
        queued
    }

    /// Tells the room about this participant's microphone and camera; repeated after rejoins.
    pub fn set_state(&self, muted: bool, camera: bool) {
        let update = StateUpdate { muted, camera };
        *lock(&self.shared.state) = Some(update);
        if self.shared.connected.load(Ordering::Relaxed) {
            lock(&self.shared.queue).push_control(ClientMessage::State(update).to_json());
            self.shared.wake.notify_one();
        }
    }

    /// The relay clock at local instant `at`, once known.
    pub fn relay_time(&self, at: Instant) -> Option<chinwag_proto::RelayTime> {
        lock(&self.shared.clock).relay_time(at)
    }

    pub fn rtt(&self) -> Option<Duration> {
        lock(&self.shared.clock).rtt()
    }

    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> TransportStats {
        let drops = lock(&self.shared.queue).drops();
        TransportStats {
            audio_dropped: drops.audio_stale + drops.audio_overflow,
            video_replaced: drops.video_superseded,
            audio_received_dropped: self.shared.audio_received_dropped.load(Ordering::Relaxed),
            video_received_dropped: self.shared.video_received_dropped.load(Ordering::Relaxed),
            bytes_sent: self.shared.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.shared.bytes_received.load(Ordering::Relaxed),
        }
    }

    /// The uplink as measured: queueing delay towards the relay and what it delivers.
    pub fn link_state(&self) -> LinkState {
        let link = lock(&self.shared.link);
        LinkState {
            queue_delay: link.queue_delay(),
            delivered_bps: link.delivered_rate().map(|bytes| bytes * 8.0),
            rtt: link.smoothed_rtt(),
        }
    }

    /// Closes the connection and stops reconnecting, wherever the connection thread is
    /// (dialling, joining, waiting to retry, in a call); [`TransportEvent::Left`] follows.
    /// Never waits.
    pub fn leave(&self) {
        self.shared.leaving.send_replace(true);
        self.shared.wake.notify_one();
    }

    /// Waits up to `within` for the connection thread to end after [`Transport::leave`];
    /// returns whether it did.
    pub fn wait_finished(&self, within: Duration) -> bool {
        matches!(self.finished.recv_timeout(within), Err(crossbeam_channel::RecvTimeoutError::Disconnected))
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        // The thread ends by itself; nothing here waits for it.
        self.leave();
    }
}

fn tls_connector(url: &str, ca_file: Option<&PathBuf>) -> Result<Option<Connector>, TransportError> {
    if !url.starts_with("wss://") {
        return Ok(None);
    }
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ignored_because_one_bad_system_root_should_not_stop_tls = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let ca_error = |reason: String| TransportError::CaFile { path: path.clone(), reason };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| ca_error(error.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("it holds no PEM certificate".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|error| ca_error(error.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Ok(Some(Connector::Rustls(Arc::new(config))))
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where the connection thread delivers what it receives.
struct Routes {
    events: Sender<TransportEvent>,
    video: Sender<ReceivedMedia>,
}

/// How a session with the relay ended.
enum Ending {
    Left,
    Dropped(TransportError),
}

/// Resolves when [`Transport::leave`] has been called.
async fn left(shared: &Shared) {
    let mut leaving = shared.leaving.subscribe();
    let _ = leaving.wait_for(|leaving| *leaving).await;
}

async fn run(
    config: TransportConfig,
    url: String,
    connector: Option<Connector>,
    shared: &Shared,
    routes: &Routes,
) {
    let mut joined_before = false;
    // The last welcome's secret: a rejoin with it takes the place of a connection the relay
    // still thinks is alive, instead of being refused as one too many.
    let mut resume: Option<String> = None;
    let mut attempt = 0u32;
    loop {
        let attempt_result = tokio::select! {
            biased;
            () = left(shared) => break,
            result = connect_and_join(&config, &url, connector.clone(), shared, resume.clone()) => result,
        };
        let error = match attempt_result {
            Ok((socket, welcome)) => {
                attempt = 0;
                info!(room = %welcome.room, id = %welcome.id, "joined");
                resume = welcome.resume;
                {
                    let mut queue = lock(&shared.queue);
                    queue.clear();
                    if let Some(state) = *lock(&shared.state) {
                        queue.push_control(ClientMessage::State(state).to_json());
                    }
                }
                shared.connected.store(true, Ordering::Relaxed);
                let _ = routes.events.send(TransportEvent::Joined {
                    id: welcome.id,
                    room: welcome.room,
                    peers: welcome.peers,
                    rejoined: joined_before,
                });
                joined_before = true;
                let ending = session(socket, &config, &url, shared, routes).await;
                shared.connected.store(false, Ordering::Relaxed);
                lock(&shared.queue).clear();
                match ending {
                    Ending::Left => break,
                    Ending::Dropped(error) => error,
                }
            }
            Err(error) => error,
        };
        let first_attempt_failed_for_good = !joined_before && error.fails_first_attempt();
        if error.is_permanent()
            || first_attempt_failed_for_good
            || (!joined_before && !config.retry_first_connect)
        {
            let _ = routes.events.send(TransportEvent::Failed(error));
            return;
        }
        let retry_in = backoff(&config, attempt);
        attempt = attempt.saturating_add(1);
        debug!(%error, ?retry_in, "disconnected");
        let _ = routes.events.send(TransportEvent::Disconnected { error, retry_in });
        tokio::select! {
            () = left(shared) => break,
            () = tokio::time::sleep(retry_in) => {}
        }
    }
    let _ = routes.events.send(TransportEvent::Left);
}

/// Exponential backoff with a little spread, so that many clients of one restarted relay do
/// not all return in the same millisecond.
fn backoff(config: &TransportConfig, attempt: u32) -> Duration {
    let exponential = config.backoff_initial.saturating_mul(1 << attempt.min(10));
    let base = exponential.min(config.backoff_max);
    let spread = (std::process::id().wrapping_mul(2_654_435_761).wrapping_add(attempt) % 200) as f64 / 1000.0;
    base.mul_f64(0.9 + spread)
}

/// `host` and `port` of a `ws[s]://host:port/v1` URL made by [`server_url`].
fn host_and_port(url: &str) -> (&str, u16) {
    let authority = url.split("://").nth(1).unwrap_or(url);
    let authority = authority.split('/').next().unwrap_or(authority);
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.trim_start_matches('[').trim_end_matches(']'), port.parse().unwrap_or(0)),
        None => (authority, chinwag_proto::DEFAULT_PORT),
    }
}

/// Resolves the relay's name and opens a TCP connection to the first address that answers.
async fn dial(url: &str) -> Result<TcpStream, TransportError> {
    let (host, port) = host_and_port(url);
    let addresses: Vec<_> = match tokio::net::lookup_host((host, port)).await {
        Ok(addresses) => addresses.collect(),
        Err(error) => {
            let reason = error.to_string();
            // No DNS server answered: the network is down, not the name wrong.
            if reason.contains("Temporary failure") {
                let reason = format!("cannot look up {host}; is the network up?");
                return Err(TransportError::Unreachable { url: url.to_owned(), reason });
            }
            return Err(TransportError::UnknownHost { host: host.to_owned(), reason });
        }
    };
    let mut last_error = None;
    for address in &addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                crate::socket::tune(&stream);
                return Ok(stream);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(match last_error {
        Some(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            TransportError::ConnectionRefused { url: url.to_owned() }
        }
        Some(error) => TransportError::Unreachable { url: url.to_owned(), reason: error.to_string() },
        None => TransportError::UnknownHost { host: host.to_owned(), reason: "it has no address".into() },
    })
}

async fn connect_and_join(
    config: &TransportConfig,
    url: &str,
    connector: Option<Connector>,
    shared: &Shared,
    resume: Option<String>,
) -> Result<(Socket, chinwag_proto::Welcome), TransportError> {
    let connect = async {
        let stream = dial(url).await?;
        tokio_tungstenite::client_async_tls_with_config(url, stream, None, connector)
            .await
            .map_err(|error| connect_error(url, error))
    };
    let (mut socket, _) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await.map_err(|_| {
        TransportError::Unreachable { url: url.to_owned(), reason: "no answer within 10 s".into() }
    })??;
    let join = ClientMessage::Join(Join {
        version: u64::from(chinwag_proto::PROTOCOL_VERSION),
        room: config.room.clone(),
        name: config.name.clone(),
        password: config.password.clone(),
        resume,
        token: config.token.clone(),
    });
    let lost = |reason: String| TransportError::Lost { url: url.to_owned(), reason };
    socket.send(Message::text(join.to_json())).await.map_err(|error| lost(error.to_string()))?;
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return Err(lost("no answer to join within 10 s".into())),
            Ok(None) => return Err(lost("closed before answering join".into())),
            Ok(Some(Err(error))) => return Err(lost(error.to_string())),
            Ok(Some(Ok(message))) => message,
        };
        let message = match message {
            Message::Text(text) => text,
            Message::Close(frame) => return Err(closed_by_relay(url, frame.as_ref())),
            _ => continue,
        };
        match parse_server_message(&message) {
            Ok(ServerMessage::Welcome(welcome)) => {
                let mut clock = lock(&shared.clock);
                clock.reset();
                clock.handle_welcome(Instant::now(), welcome.server_time_us);
                return Ok((socket, welcome));
            }
            Ok(ServerMessage::Error(error)) => {
                return Err(TransportError::Refused { code: error.code, message: error.message });
            }
            Ok(_) => continue,
            Err(error) => return Err(lost(format!("the relay sent something unexpected: {error}"))),
        }
    }
}

fn connect_error(url: &str, error: tungstenite::Error) -> TransportError {
    let url = url.to_owned();
    match error {
        tungstenite::Error::Http(response) if response.status() == 503 => TransportError::RelayFull { url },
        tungstenite::Error::Http(response) => TransportError::NotARelay {
            url,
            reason: format!("HTTP {} instead of a WebSocket", response.status()),
        },
        tungstenite::Error::Tls(error) => TransportError::Tls { url, reason: error.to_string() },
        tungstenite::Error::Io(error) => {
            let reason = match error.get_ref().map(|inner| inner.to_string()) {
                // rustls reports certificate problems through an IO error.
                Some(inner) if error.kind() == std::io::ErrorKind::InvalidData => {
                    return TransportError::Tls { url, reason: inner };
                }
                _ => error.to_string(),
            };
            TransportError::Lost { url, reason }
        }
        tungstenite::Error::Url(error) => TransportError::Unreachable { url, reason: error.to_string() },
        other => TransportError::NotARelay { url, reason: other.to_string() },
    }
}

/// What a close frame from the relay means: its code names the reason even when the `error`
/// message before it was lost.
fn closed_by_relay(url: &str, frame: Option<&tungstenite::protocol::CloseFrame>) -> TransportError {
    use chinwag_proto::close_code;
    let code = frame.map(|frame| u16::from(frame.code));
    let reason = frame.map(|frame| frame.reason.to_string()).filter(|reason| !reason.is_empty());
    match code {
        Some(close_code::GOING_AWAY) => TransportError::Refused {
            code: ErrorCode::ShuttingDown,
            message: reason.unwrap_or_else(|| "the relay is shutting down".into()),
        },
        _ => TransportError::Lost {
            url: url.to_owned(),
            reason: reason.unwrap_or_else(|| "the relay closed the connection".into()),
        },
    }
}

/// One joined session: read, write and ping until the connection ends or the caller leaves.
async fn session(
    socket: Socket,
    config: &TransportConfig,
    url: &str,
    shared: &Shared,
    routes: &Routes,
) -> Ending {
    let unsent = match socket.get_ref() {
        MaybeTlsStream::Plain(tcp) => Some(Unsent::of(tcp)),
        MaybeTlsStream::Rustls(tls) => Some(Unsent::of(tls.get_ref().0)),
        _ => None,
    };
    *lock(&shared.link) = LinkEstimator::default();
    let (mut sink, mut stream) = socket.split();
    let pings: Mutex<VecDeque<(u64, Instant)>> = Mutex::new(VecDeque::new());
    let lost = |reason: String| TransportError::Lost { url: url.to_owned(), reason };
    let base = Instant::now();
    let ending = {
        let reader = async {
            while let Some(message) = stream.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => return lost(error.to_string()),
                };
                shared.bytes_received.fetch_add(message.len() as u64, Ordering::Relaxed);
                match message {
                    Message::Binary(frame) => {
                        let arrived = Instant::now();
                        let Ok((header, _)) = MediaHeader::decode(&frame) else {
                            debug!("dropped a malformed media frame");
                            continue;
                        };
                        let media = ReceivedMedia { header, payload: frame.slice(HEADER_LEN..), arrived };
                        match header.kind {
                            MediaKind::Audio if routes.events.len() > EVENT_BACKLOG => {
                                shared.audio_received_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            MediaKind::Audio => {
                                let _ = routes.events.send(TransportEvent::Audio(media));
                            }
                            MediaKind::Video => {
                                if let Err(TrySendError::Full(_)) = routes.video.try_send(media) {
                                    shared.video_received_dropped.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Message::Text(text) => match parse_server_message(&text) {
                        Ok(ServerMessage::PeerJoined { peer }) => {
                            let _ = routes.events.send(TransportEvent::PeerJoined(peer));
                        }
                        Ok(ServerMessage::PeerLeft { id }) => {
                            let _ = routes.events.send(TransportEvent::PeerLeft(id));
                        }
                        Ok(ServerMessage::PeerState(state)) => {
                            let _ = routes.events.send(TransportEvent::PeerState(state));
                        }
                        Ok(ServerMessage::Pong { client_time_us, server_time_us, received_bytes }) => {
                            let received = Instant::now();
                            let sent = {
                                let mut pings = lock(&pings);
                                while pings.front().is_some_and(|(id, _)| *id < client_time_us) {
                                    pings.pop_front();
                                }
                                pings.pop_front().filter(|(id, _)| *id == client_time_us).map(|(_, at)| at)
                            };
                            if let Some(sent) = sent {
                                lock(&shared.clock).handle_pong(sent, received, server_time_us);
                                let mut link = lock(&shared.link);
                                link.handle_rtt(received, received - sent);
                                // The way out alone: the relay's clock when the ping arrived, minus
                                // ours when it left (their offset cancels in the estimator).
                                link.handle_one_way(received, server_time_us as i64 - client_time_us as i64);
                                if let Some(bytes) = received_bytes {
                                    link.handle_far_end(server_time_us, bytes);
                                }
                                drop(link);
                                let _ = routes.events.send(TransportEvent::Rtt(received - sent));
                            }
                        }
                        Ok(ServerMessage::Error(error)) => {
                            // The relay says why before it closes: keep its words.
                            return TransportError::Refused { code: error.code, message: error.message };
                        }
                        Ok(ServerMessage::Welcome(_)) => {}
                        Err(error) => debug!(%error, "ignored a control message"),
                    },
                    Message::Close(frame) => return closed_by_relay(url, frame.as_ref()),
                    _ => {}
                }
            }
            lost("the relay closed the connection".into())
        };
        let writer = async {
            let mut ping_timer = tokio::time::interval(config.ping_interval);
            ping_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // Leaving is noticed between messages, never in the middle of one: a message
                // taken from the queue is always written.
                if *shared.leaving.borrow() {
                    return Ending::Left;
                }
                // One message at a time, most urgent first: audio queued while a video frame was
                // being written goes before the next video frame. Video also waits while the
                // kernel still holds unsent bytes, so that audio queued next is never stuck
                // behind more than a few milliseconds of it there.
                let (next, video_waiting) = {
                    let mut queue = lock(&shared.queue);
                    match queue.poll_urgent() {
                        Some(next) => (Some(next), false),
                        None if queue.queued_frames().1 == 0 => (None, false),
                        None if video_gate_open(unsent.as_ref()) => {
                            (queue.pop_video().map(Next::Media), false)
                        }
                        None => (None, true),
                    }
                };
                let message = match next {
                    Some(Next::Control(text)) => Message::text(text),
                    Some(Next::Media(queued)) => Message::Binary(queued.frame),
                    None => {
                        let gate = async {
                            if video_waiting {
                                tokio::time::sleep(GATE_POLL).await;
                            } else {
                                std::future::pending::<()>().await;
                            }
                        };
                        tokio::select! {
                            () = shared.wake.notified() => continue,
                            () = gate => continue,
                            () = left(shared) => return Ending::Left,
                            _ = ping_timer.tick() => {
                                let sent = Instant::now();
                                let client_time_us = sent.duration_since(base).as_micros() as u64;
                                lock(&pings).push_back((client_time_us, sent));
                                let received_bytes = Some(shared.bytes_received.load(Ordering::Relaxed));
                                Message::text(ClientMessage::Ping { client_time_us, received_bytes }.to_json())
                            }
                        }
                    }
                };
                let len = message.len() as u64;
                if let Err(error) = sink.send(message).await {
                    return Ending::Dropped(lost(error.to_string()));
                }
                let total = shared.bytes_sent.fetch_add(len, Ordering::Relaxed) + len;
                lock(&shared.link).handle_sent_total(Instant::now(), total);
            }
        };
        // A writer stuck on a socket that takes nothing is given up a moment after leaving.
        let stuck = async {
            left(shared).await;
            tokio::time::sleep(LEAVE_GRACE).await;
        };
        tokio::select! {
            biased;
            ending = writer => ending,
            error = reader => Ending::Dropped(error),
            () = stuck => Ending::Left,
        }
    };
    if matches!(ending, Ending::Left) {
        // The last words queued go out, then a goodbye so that the others see us leave at
        // once; never wait long for either.
        let goodbye = async {
            loop {
                let next = lock(&shared.queue).poll_urgent();
                let message = match next {
                    Some(Next::Control(text)) => Message::text(text),
                    Some(Next::Media(queued)) => Message::Binary(queued.frame),
                    None => break,
                };
                sink.feed(message).await?;
            }
            sink.send(Message::Close(None)).await
        };
        let _ = tokio::time::timeout(LEAVE_GRACE, goodbye).await;
    }
    ending
}

/// Whether the kernel's unsent bytes are few enough for a video frame to go.
fn video_gate_open(unsent: Option<&Unsent>) -> bool {
    unsent.and_then(Unsent::bytes).is_none_or(|bytes| bytes < VIDEO_GATE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let config = TransportConfig::new("x", "r", "n");
        let delays: Vec<Duration> = (0..8).map(|attempt| backoff(&config, attempt)).collect();
        assert!(delays[0] >= Duration::from_millis(225) && delays[0] <= Duration::from_millis(275));
        assert!(delays[1] > delays[0] && delays[2] > delays[1]);
        assert!(delays[7] <= Duration::from_millis(5500) && delays[7] >= Duration::from_millis(4500));
    }

    #[test]
    fn host_and_port_come_out_of_relay_urls() {
        assert_eq!(host_and_port("ws://relay.example:7300/v1"), ("relay.example", 7300));
        assert_eq!(host_and_port("wss://[::1]:9000/v1"), ("::1", 9000));
    }
}
