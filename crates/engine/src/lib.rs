//! Chinwag's call engine: the threads that drive a call's core, devices and connection.
//!
//! This crate owns a call's threads and what connects them: the send thread (audio source →
//! voice processing → [`chinwag_call::VoiceSender`] → transport), the playout thread
//! (transport → [`chinwag_call::Playout`] → sink, with per-peer recordings), the video send
//! thread (source → [`chinwag_call::VideoRate`] → JPEG → transport) and the video decoder
//! (transport → JPEG → [`chinwag_call::LipSync`] → the newest frame per peer). One [`Call`]
//! handle takes [`Command`]s, each routed straight to the thread it concerns, and gives
//! [`CallEvent`]s (waking the caller through [`CallConfig::waker`]); [`Call::stats`] reads the
//! figures the threads publish without taking any lock they hold. The app and the bot use it
//! alike and need no other crate of ours: the types its API uses are re-exported here.
//!
//! It deliberately holds no media logic of its own: stamping, jitter buffering, decoding,
//! mixing, mouth-to-ear and lip sync live in the call core (`chinwag-call`), codecs in
//! `chinwag-codec`, the connection in `chinwag-transport`. Nothing on the audio path waits
//! on the network (sending only queues), and nothing a caller does waits on a thread of the
//! call: dropping a [`Call`] or sending it a command never blocks.

mod devices;
mod play;
mod priority;
mod send;
mod stats;
mod video;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chinwag_capture::CaptureError;
use chinwag_jitter::JitterConfig;
use chinwag_transport::Transport;
use crossbeam_channel::{Receiver, Sender};

pub use chinwag_call::{MAX_VOLUME, Percentiles, Sketch};
pub use chinwag_capture::DeviceTrouble;
pub use chinwag_codec::{FrameDuration, ProcessingConfig, VideoFrame, VoiceConfig};
pub use chinwag_proto::{
    DEFAULT_PORT, ErrorCode, MAX_NAME_CHARS, MAX_ROOM_CHARS, ParticipantId, Peer, ProtoError, WS_PATH,
    validate_name, validate_password, validate_room,
};
pub use chinwag_transport::{TransportConfig, TransportError, TransportStats, server_url};
pub use devices::{DeviceLists, list_devices};
pub use stats::{CallStats, PeerStats};
pub use video::{VideoInput, VideoSettings};

/// Where the call's outgoing audio comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSpec {
    /// A microphone: `None` or `"default"` for the default one.
    Device(Option<String>),
    /// A sine tone at this frequency.
    Tone(f32),
    /// A WAV file, played once in real time, then silence.
    Wav(PathBuf),
    Silence,
    /// Send nothing at all.
    None,
    /// What this client plays out, sent back to the room (an echo-test service).
    Echo,
}

/// Where the call's incoming audio goes.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputSpec {
    /// A speaker: `None` or `"default"` for the default one.
    Device(Option<String>),
    /// No device: play out on a real-time clock (recordings and stats still work).
    None,
}

/// Called whenever the call has news for its owner (an event): an app asks for a repaint.
#[derive(Clone)]
pub struct Waker(Arc<dyn Fn() + Send + Sync>);

impl Waker {
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(wake))
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

#[derive(Debug, Clone)]
pub struct CallConfig {
    pub transport: TransportConfig,
    pub voice: VoiceConfig,
    pub jitter: JitterConfig,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub video: VideoSettings,
    /// Echo cancellation, noise suppression and gain on a real microphone's signal.
    pub processing: ProcessingConfig,
    /// Write `<peer name>.wav` here for each peer (what was played out from that peer), and
    /// `<peer name>.jpg` (the last video frame received from that peer) on leaving.
    pub record_dir: Option<PathBuf>,
    /// Called after each event is queued.
    pub waker: Option<Waker>,
    /// Ask the OS to run the audio threads at real-time (or at least raised) priority.
    pub raise_priority: bool,
}

impl CallConfig {
    pub fn new(transport: TransportConfig) -> Self {
        Self {
            transport,
            voice: VoiceConfig::default(),
            jitter: JitterConfig::default(),
            input: InputSpec::None,
            output: OutputSpec::None,
            video: VideoSettings::default(),
            processing: ProcessingConfig::default(),
            record_dir: None,
            waker: None,
            raise_priority: true,
        }
    }
}

/// What the app or bot asks of a running call.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SetMuted(bool),
    /// A gain for one peer's audio, 0.0 (silent) to [`MAX_VOLUME`].
    SetPeerVolume(ParticipantId, f32),
    SetInput(InputSpec),
    SetOutput(OutputSpec),
    /// Change the video source; `VideoInput::None` turns the camera off.
    SetVideoInput(VideoInput),
    /// Switch echo cancellation, noise suppression and gain on or off.
    SetProcessing(ProcessingConfig),
    Leave,
}

/// What happened in the call.
#[derive(Debug, Clone)]
pub enum CallEvent {
    Joined {
        id: ParticipantId,
        room: String,
        peers: Vec<Peer>,
        rejoined: bool,
    },
    PeerJoined(Peer),
    PeerLeft(ParticipantId),
    PeerState {
        id: ParticipantId,
        muted: bool,
        camera: bool,
    },
    /// The connection dropped; the engine reconnects by itself.
    Reconnecting {
        error: TransportError,
        retry_in: Duration,
    },
    /// The call cannot go on (wrong password, room full, relay unreachable at the start).
    Failed(TransportError),
    /// A device failed or could not be opened; the call goes on with `fallback`.
    DeviceProblem {
        error: String,
        fallback: String,
    },
    /// The video source could not be opened or stopped; video is off until asked again.
    VideoStopped {
        error: String,
    },
    /// The system's default device changed and the call followed it.
    DeviceChanged {
        direction: &'static str,
        name: String,
    },
    Left,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Device(#[from] CaptureError),
    #[error("cannot create recording folder {path}: {source}")]
    RecordDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a call's threads send their events: the owner's channel, then its waker.
#[derive(Clone)]
pub(crate) struct Events {
    tx: Sender<CallEvent>,
    waker: Option<Waker>,
}

impl Events {
    pub(crate) fn send(&self, event: CallEvent) {
        if self.tx.send(event).is_ok()
            && let Some(waker) = &self.waker
        {
            (waker.0)();
        }
    }
}

/// What a call's threads share: the connection, the published figures, and two switches.
pub(crate) struct Shared {
    pub(crate) transport: Transport,
    pub(crate) board: stats::Board,
    pub(crate) video: video::Screen,
    pub(crate) muted: AtomicBool,
    camera: AtomicBool,
    pub(crate) clock: WallClock,
}

impl Shared {
    fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
        self.transport.set_state(muted, self.camera.load(Ordering::Relaxed));
    }

    pub(crate) fn set_camera(&self, on: bool) {
        if self.camera.swap(on, Ordering::Relaxed) != on {
            self.transport.set_state(self.muted.load(Ordering::Relaxed), on);
        }
    }
}

/// Converts the engine's `Instant`s to wall-clock time for reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    instant: Instant,
    unix_us: u64,
}

impl WallClock {
    fn now() -> Self {
        let unix_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Self { instant: Instant::now(), unix_us }
    }

    pub(crate) fn unix_us(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.unix_us + after.as_micros() as u64,
            None => self.unix_us.saturating_sub(self.instant.duration_since(at).as_micros() as u64),
        }
    }
}

/// Each thread's command line.
struct Routes {
    send: Sender<send::SendCommand>,
    play: Sender<play::PlayCommand>,
    video: Sender<video::VideoCommand>,
    decode: Sender<()>,
}

/// A running call. Dropping it leaves without waiting for anything.
pub struct Call {
    routes: Routes,
    events: Receiver<CallEvent>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Call {
    /// Starts connecting and the call's threads. Errors that need no network (a bad address,
    /// a missing WAV file, an unwritable recording folder) are reported here; the rest arrive
    /// as events. Opens no device on the calling thread.
    pub fn start(config: CallConfig) -> Result<Call, EngineError> {
        if let Some(dir) = &config.record_dir {
            std::fs::create_dir_all(dir)
                .map_err(|source| EngineError::RecordDir { path: dir.clone(), source })?;
        }
        if let InputSpec::Wav(path) = &config.input {
            // Read it now so that a bad file is an error before anything connects.
            chinwag_capture::read_wav_48k_mono(path)?;
        }
        let mut transport_config = config.transport.clone();
        if config.raise_priority {
            // Audio arrives through the connection thread: it is an audio thread too.
            transport_config.thread_setup =
                Some(chinwag_transport::ThreadSetup(Arc::new(|| priority::raise_audio_thread("network"))));
        }
        let transport = Transport::start(transport_config)?;
        let shared = Arc::new(Shared {
            transport,
            board: stats::Board::default(),
            video: video::Screen::default(),
            muted: AtomicBool::new(false),
            camera: AtomicBool::new(false),
            clock: WallClock::now(),
        });
        let (event_tx, events) = crossbeam_channel::unbounded();
        let events_out = Events { tx: event_tx, waker: config.waker.clone() };
        let (send_tx, send_rx) = crossbeam_channel::unbounded();
        let (play_tx, play_rx) = crossbeam_channel::unbounded();
        let (video_tx, video_rx) = crossbeam_channel::unbounded();
        let (decode_tx, decode_rx) = crossbeam_channel::bounded(1);
        // The playout thread hands each mix to the send thread: as the echo canceller's far
        // end, and as the signal itself for an echo service.
        let (mix_tx, mix_rx) = crossbeam_channel::bounded(100);
        let echo = matches!(config.input, InputSpec::Echo);

        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(body).expect("the OS lets us start a thread")
        };
        // The senders come first: `leave` waits for them before the connection says goodbye.
        let threads = vec![
            spawn("chinwag-send", {
                let (config, shared, events) = (config.clone(), Arc::clone(&shared), events_out.clone());
                Box::new(move || send::run(config, shared, send_rx, mix_rx, events))
            }),
            spawn("chinwag-video", {
                let (settings, shared, events) =
                    (config.video.clone(), Arc::clone(&shared), events_out.clone());
                Box::new(move || video::run_send(settings, shared, video_rx, events))
            }),
            spawn("chinwag-play", {
                let (config, shared, events) = (config.clone(), Arc::clone(&shared), events_out.clone());
                let links = play::Links { mixes: mix_tx, echo };
                Box::new(move || play::run(config, shared, play_rx, links, events))
            }),
            spawn("chinwag-video-decode", {
                let (shared, record_dir) = (Arc::clone(&shared), config.record_dir.clone());
                Box::new(move || video::run_decode(shared, decode_rx, record_dir))
            }),
        ];
        let routes = Routes { send: send_tx, play: play_tx, video: video_tx, decode: decode_tx };
        Ok(Call { routes, events, shared, threads })
    }

    pub fn events(&self) -> &Receiver<CallEvent> {
        &self.events
    }

    /// Passes `command` straight to the thread it concerns. Never waits.
    pub fn command(&self, command: Command) {
        let routes = &self.routes;
        match command {
            Command::SetMuted(muted) => self.shared.set_muted(muted),
            Command::SetPeerVolume(id, volume) => {
                let _ = routes.play.send(play::PlayCommand::Volume(id, volume));
            }
            Command::SetOutput(spec) => {
                let _ = routes.play.send(play::PlayCommand::Output(spec));
            }
            Command::SetInput(spec) => {
                let _ = routes.send.send(send::SendCommand::Input(spec));
            }
            Command::SetProcessing(processing) => {
                let _ = routes.send.send(send::SendCommand::Processing(processing));
            }
            Command::SetVideoInput(input) => {
                let _ = routes.video.send(video::VideoCommand::Input(input));
            }
            Command::Leave => self.signal_leave(),
        }
    }

    /// The figures as the threads last published them (at most about 100 ms old).
    pub fn stats(&self) -> CallStats {
        self.shared.board.snapshot(self.shared.transport.stats())
    }

    /// The newest video frame from `peer` that is due to be shown (lip-synced to its audio).
    pub fn video_frame(&self, peer: ParticipantId) -> Option<Arc<VideoFrame>> {
        self.shared.video.frame(peer)
    }

    /// The last frame this client sent, for a self-view.
    pub fn preview(&self) -> Option<Arc<VideoFrame>> {
        self.shared.video.preview()
    }

    /// Leaves, then waits up to `within` for the threads to finish their recordings, publish
    /// their last figures and say goodbye to the relay; returns whether everything finished in
    /// time. Whatever is still running after that ends by itself.
    pub fn leave(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        // The senders stop first, so that what they queued still goes out before the goodbye.
        self.signal_threads();
        let wait_for = |threads: &[JoinHandle<()>], until: Instant| loop {
            if threads.iter().all(JoinHandle::is_finished) {
                break true;
            }
            if Instant::now() >= until {
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let senders_done = wait_for(&self.threads[..SENDERS], Instant::now() + within / 2);
        self.shared.transport.leave();
        let threads_done = wait_for(&self.threads, deadline);
        senders_done
            && threads_done
            && self.shared.transport.wait_finished(deadline.saturating_duration_since(Instant::now()))
    }

    fn signal_threads(&self) {
        let routes = &self.routes;
        let _ = routes.send.send(send::SendCommand::Leave);
        let _ = routes.play.send(play::PlayCommand::Leave);
        let _ = routes.video.send(video::VideoCommand::Leave);
        let _ = routes.decode.try_send(());
    }

    fn signal_leave(&self) {
        self.signal_threads();
        self.shared.transport.leave();
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.signal_leave();
    }
}

/// How many of a call's threads send media (they come first in `Call::threads`).
const SENDERS: usize = 2;

/// How often the system's default devices are checked, when the call uses them.
const DEFAULT_DEVICE_CHECK: Duration = Duration::from_secs(2);

/// A peer's name made safe as a file name: path separators and control characters become `_`.
fn file_name(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_control() || matches!(c, '/' | '\\' | ':') { '_' } else { c }).collect();
    match cleaned.as_str() {
        "" | "." | ".." => "_".into(),
        _ => cleaned,
    }
}
