//! The connection thread: connect, join, read, write, ping, reconnect.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chinwag_proto::{
    ClientMessage, HEADER_LEN, Join, MediaHeader, MediaKind, ParticipantId, Peer, PeerState, ServerMessage,
    StateUpdate, parse_server_message,
};
use crossbeam_channel::{Receiver, Sender};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, info};

use crate::{RelayClock, TransportError, server_url};

/// Audio frames kept for sending while the socket is busy: half a second at 20 ms frames.
/// Older ones are dropped: late audio is worse than none.
const AUDIO_QUEUE_FRAMES: usize = 25;
/// Media events waiting for the caller beyond which new media is dropped.
const EVENT_BACKLOG: usize = 2000;
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
    /// A PEM file with extra CA certificates to trust for `wss://`, besides the system's.
    pub ca_file: Option<PathBuf>,
    pub ping_interval: Duration,
    /// Keep trying when the very first connection fails (an app waiting for its relay),
    /// rather than reporting [`TransportEvent::Failed`] (a bot that should exit).
    pub retry_first_connect: bool,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl TransportConfig {
    pub fn new(server: impl Into<String>, room: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            room: room.into(),
            name: name.into(),
            password: None,
            ca_file: None,
            ping_interval: Duration::from_secs(1),
            retry_first_connect: false,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
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
    /// A media frame from a peer, with the local instant it arrived.
    Media {
        header: MediaHeader,
        payload: Bytes,
        arrived: Instant,
    },
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

/// Counters of what the send path dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub audio_dropped: u64,
    pub video_replaced: u64,
    pub media_received_dropped: u64,
}

/// A handle to one participant's connection. Dropping it leaves the room.
pub struct Transport {
    shared: Arc<Shared>,
    events: Receiver<TransportEvent>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    outbox: Mutex<Outbox>,
    wake: Notify,
    clock: Mutex<RelayClock>,
    leaving: AtomicBool,
    connected: AtomicBool,
    audio_dropped: AtomicU64,
    video_replaced: AtomicU64,
    media_received_dropped: AtomicU64,
}

#[derive(Default)]
struct Outbox {
    control: VecDeque<String>,
    audio: VecDeque<Vec<u8>>,
    video: Option<Vec<u8>>,
    /// The last state sent, repeated after every rejoin.
    state: Option<StateUpdate>,
}

impl Outbox {
    /// Everything waiting, in the order it should go out: control, then audio oldest first,
    /// then the one newest video frame. Audio queued while that video frame is being written
    /// goes out first in the next batch.
    fn take_batch(&mut self) -> Vec<Message> {
        let mut batch = Vec::with_capacity(self.control.len() + self.audio.len() + 1);
        batch.extend(self.control.drain(..).map(Message::text));
        batch.extend(self.audio.drain(..).map(Message::binary));
        batch.extend(self.video.take().map(Message::binary));
        batch
    }
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
            outbox: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            clock: Mutex::new(RelayClock::new(Instant::now())),
            leaving: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            audio_dropped: AtomicU64::new(0),
            video_replaced: AtomicU64::new(0),
            media_received_dropped: AtomicU64::new(0),
        });
        let (events_tx, events) = crossbeam_channel::unbounded();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("chinwag-net".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime with IO and timers builds on every supported platform");
                runtime.block_on(run(config, url, connector, thread_shared, events_tx));
            })
            .expect("the OS lets us start a thread");
        Ok(Transport { shared, events, thread: Some(thread) })
    }

    /// Everything that happens on the connection, in order.
    pub fn events(&self) -> &Receiver<TransportEvent> {
        &self.events
    }

    /// Queues a media frame. `header.sender` is ignored (the relay writes it). Audio waits in
    /// a short queue; a video frame replaces one not yet sent. Nothing is queued while
    /// disconnected: stale media is worse than none.
    pub fn send_media(&self, header: &MediaHeader, payload: &[u8]) {
        if !self.shared.connected.load(Ordering::Relaxed) {
            return;
        }
        let frame = chinwag_proto::encode_frame(header, payload);
        let mut outbox = lock(&self.shared.outbox);
        match header.kind {
            MediaKind::Audio => {
                if outbox.audio.len() >= AUDIO_QUEUE_FRAMES {
                    let _dropped_because_socket_is_behind = outbox.audio.pop_front();
                    self.shared.audio_dropped.fetch_add(1, Ordering::Relaxed);
                }
                outbox.audio.push_back(frame);
            }
            MediaKind::Video => {
                if outbox.video.replace(frame).is_some() {
                    self.shared.video_replaced.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        drop(outbox);
        self.shared.wake.notify_one();
    }

    /// Tells the room about this participant's microphone and camera; repeated after rejoins.
    pub fn set_state(&self, muted: bool, camera: bool) {
        let update = StateUpdate { muted, camera };
        let mut outbox = lock(&self.shared.outbox);
        outbox.state = Some(update);
        outbox.control.push_back(ClientMessage::State(update).to_json());
        drop(outbox);
        self.shared.wake.notify_one();
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
        TransportStats {
            audio_dropped: self.shared.audio_dropped.load(Ordering::Relaxed),
            video_replaced: self.shared.video_replaced.load(Ordering::Relaxed),
            media_received_dropped: self.shared.media_received_dropped.load(Ordering::Relaxed),
        }
    }

    /// Closes the connection and stops reconnecting; [`TransportEvent::Left`] follows.
    pub fn leave(&self) {
        self.shared.leaving.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.leave();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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

/// How a session with the relay ended.
enum Ending {
    Left,
    Dropped(TransportError),
}

async fn run(
    config: TransportConfig,
    url: String,
    connector: Option<Connector>,
    shared: Arc<Shared>,
    events: Sender<TransportEvent>,
) {
    let mut joined_before = false;
    let mut attempt = 0u32;
    loop {
        if shared.leaving.load(Ordering::Relaxed) {
            break;
        }
        let error = match connect_and_join(&config, &url, connector.clone(), &shared).await {
            Ok((socket, welcome)) => {
                attempt = 0;
                info!(room = %welcome.room, id = %welcome.id, "joined");
                shared.connected.store(true, Ordering::Relaxed);
                let _ = events.send(TransportEvent::Joined {
                    id: welcome.id,
                    room: welcome.room,
                    peers: welcome.peers,
                    rejoined: joined_before,
                });
                joined_before = true;
                let ending = session(socket, &config, &url, &shared, &events).await;
                shared.connected.store(false, Ordering::Relaxed);
                let mut outbox = lock(&shared.outbox);
                outbox.audio.clear();
                outbox.video = None;
                outbox.control.clear();
                drop(outbox);
                match ending {
                    Ending::Left => break,
                    Ending::Dropped(error) => error,
                }
            }
            Err(error) => error,
        };
        if error.is_permanent() || (!joined_before && !config.retry_first_connect) {
            let _ = events.send(TransportEvent::Failed(error));
            return;
        }
        let retry_in = backoff(&config, attempt);
        attempt = attempt.saturating_add(1);
        debug!(%error, ?retry_in, "disconnected");
        let _ = events.send(TransportEvent::Disconnected { error, retry_in });
        let deadline = tokio::time::Instant::now() + retry_in;
        while !shared.leaving.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline, shared.wake.notified()).await;
        }
    }
    let _ = events.send(TransportEvent::Left);
}

/// Exponential backoff with a little spread, so that many clients of one restarted relay do
/// not all return in the same millisecond.
fn backoff(config: &TransportConfig, attempt: u32) -> Duration {
    let exponential = config.backoff_initial.saturating_mul(1 << attempt.min(10));
    let base = exponential.min(config.backoff_max);
    let spread = (std::process::id().wrapping_mul(2_654_435_761).wrapping_add(attempt) % 200) as f64 / 1000.0;
    base.mul_f64(0.9 + spread)
}

async fn connect_and_join(
    config: &TransportConfig,
    url: &str,
    connector: Option<Connector>,
    shared: &Shared,
) -> Result<(Socket, chinwag_proto::Welcome), TransportError> {
    let (mut socket, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector)
        .await
        .map_err(|error| connect_error(url, error))?;
    let join = ClientMessage::Join(Join {
        version: u64::from(chinwag_proto::PROTOCOL_VERSION),
        room: config.room.clone(),
        name: config.name.clone(),
        password: config.password.clone(),
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
        let Message::Text(text) = message else { continue };
        match parse_server_message(&text) {
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
            TransportError::Unreachable { url, reason }
        }
        tungstenite::Error::Url(error) => TransportError::Unreachable { url, reason: error.to_string() },
        other => TransportError::NotARelay { url, reason: other.to_string() },
    }
}

/// One joined session: read, write and ping until the connection ends or the caller leaves.
async fn session(
    socket: Socket,
    config: &TransportConfig,
    url: &str,
    shared: &Shared,
    events: &Sender<TransportEvent>,
) -> Ending {
    let (mut sink, mut stream) = socket.split();
    let pings: Mutex<VecDeque<(u64, Instant)>> = Mutex::new(VecDeque::new());
    let lost = |reason: String| TransportError::Lost { url: url.to_owned(), reason };
    if let Some(state) = lock(&shared.outbox).state {
        lock(&shared.outbox).control.push_front(ClientMessage::State(state).to_json());
    }
    let base = Instant::now();
    let reader = async {
        while let Some(message) = stream.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => return lost(error.to_string()),
            };
            match message {
                Message::Binary(frame) => {
                    let arrived = Instant::now();
                    let Ok((header, _)) = MediaHeader::decode(&frame) else {
                        debug!("dropped a malformed media frame");
                        continue;
                    };
                    if events.len() > EVENT_BACKLOG {
                        shared.media_received_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let payload = frame.slice(HEADER_LEN..);
                    let _ = events.send(TransportEvent::Media { header, payload, arrived });
                }
                Message::Text(text) => match parse_server_message(&text) {
                    Ok(ServerMessage::PeerJoined { peer }) => {
                        let _ = events.send(TransportEvent::PeerJoined(peer));
                    }
                    Ok(ServerMessage::PeerLeft { id }) => {
                        let _ = events.send(TransportEvent::PeerLeft(id));
                    }
                    Ok(ServerMessage::PeerState(state)) => {
                        let _ = events.send(TransportEvent::PeerState(state));
                    }
                    Ok(ServerMessage::Pong { client_time_us, server_time_us }) => {
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
                            let _ = events.send(TransportEvent::Rtt(received - sent));
                        }
                    }
                    Ok(ServerMessage::Error(error)) => {
                        return TransportError::Refused { code: error.code, message: error.message };
                    }
                    Ok(ServerMessage::Welcome(_)) => {}
                    Err(error) => debug!(%error, "ignored a control message"),
                },
                Message::Close(frame) => {
                    let reason = frame.map_or_else(
                        || "closed by the relay".to_owned(),
                        |f| format!("closed: {}", f.reason),
                    );
                    return lost(reason);
                }
                _ => {}
            }
        }
        lost("the relay closed the connection".into())
    };
    let writer = async {
        let mut ping_timer = tokio::time::interval(config.ping_interval);
        ping_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if shared.leaving.load(Ordering::Relaxed) {
                let _ = sink.send(Message::Close(None)).await;
                return None;
            }
            let batch = lock(&shared.outbox).take_batch();
            if batch.is_empty() {
                tokio::select! {
                    () = shared.wake.notified() => continue,
                    _ = ping_timer.tick() => {
                        let sent = Instant::now();
                        let client_time_us = sent.duration_since(base).as_micros() as u64;
                        lock(&pings).push_back((client_time_us, sent));
                        let ping = ClientMessage::Ping { client_time_us }.to_json();
                        if let Err(error) = sink.send(Message::text(ping)).await {
                            return Some(lost(error.to_string()));
                        }
                        continue;
                    }
                }
            }
            let sent = async {
                for message in batch {
                    sink.feed(message).await?;
                }
                sink.flush().await
            };
            if let Err(error) = sent.await {
                return Some(lost(error.to_string()));
            }
        }
    };
    tokio::select! {
        error = reader => Ending::Dropped(error),
        ended = writer => match ended {
            None => Ending::Left,
            Some(error) => Ending::Dropped(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_put_control_then_audio_then_video() {
        let mut outbox = Outbox { video: Some(vec![2; 1000]), ..Outbox::default() };
        outbox.audio.extend([vec![1, 0], vec![1, 1]]);
        outbox.control.push_back("{}".into());
        let kinds: Vec<String> = outbox
            .take_batch()
            .into_iter()
            .map(|message| match message {
                Message::Text(text) => format!("control {text}"),
                Message::Binary(bytes) => format!("media {}", bytes[0]),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["control {}", "media 1", "media 1", "media 2"]);
        assert!(outbox.take_batch().is_empty());
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let config = TransportConfig::new("x", "r", "n");
        let delays: Vec<Duration> = (0..8).map(|attempt| backoff(&config, attempt)).collect();
        assert!(delays[0] >= Duration::from_millis(225) && delays[0] <= Duration::from_millis(275));
        assert!(delays[1] > delays[0] && delays[2] > delays[1]);
        assert!(delays[7] <= Duration::from_millis(5500) && delays[7] >= Duration::from_millis(4500));
    }
}
