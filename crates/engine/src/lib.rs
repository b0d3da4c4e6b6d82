//! Chinwag's call engine.
//!
//! This crate owns a call's moving parts and the threads that run them: the send thread
//! (audio source → Opus → transport) and the playout thread (transport → one jitter buffer and
//! decoder per remote participant → mixer → audio sink, with per-peer recordings). One [`Call`]
//! handle takes [`Command`]s and gives [`CallEvent`]s over `crossbeam-channel`, and
//! [`Call::stats`] reads what a connection panel or the bot's JSON shows. The app and the bot
//! use it alike.
//!
//! It deliberately holds no protocol, codec or buffering logic of its own (those live in the
//! proto, codec and jitter cores) and no UI. Nothing on the audio path waits on the network:
//! sending only queues into the transport, and receiving happens on the transport's thread.

mod adapt;
mod play;
mod send;
mod stats;
mod video;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chinwag_capture::{AudioSink, AudioSource, CaptureError};
use chinwag_codec::VoiceConfig;
use chinwag_jitter::JitterConfig;
use chinwag_proto::{ParticipantId, Peer};
use chinwag_transport::{Transport, TransportConfig, TransportError};
use crossbeam_channel::{Receiver, Sender};

pub use adapt::{VideoAdapter, VideoLevel};
pub use stats::{CallStats, PeerStats, Percentiles, Samples};
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

#[derive(Debug, Clone)]
pub struct CallConfig {
    pub transport: TransportConfig,
    pub voice: VoiceConfig,
    pub jitter: JitterConfig,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub video: VideoSettings,
    /// Echo cancellation, noise suppression and gain on a real microphone's signal.
    pub processing: chinwag_codec::ProcessingConfig,
    /// Write `<peer name>.wav` here for each peer (what was played out from that peer), and
    /// `<peer name>.jpg` (the last video frame received from that peer) on leaving.
    pub record_dir: Option<PathBuf>,
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
            processing: chinwag_codec::ProcessingConfig::default(),
            record_dir: None,
        }
    }
}

/// What the app or bot asks of a running call.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SetMuted(bool),
    /// A gain for one peer's audio, 0.0 (silent) to 2.0.
    SetPeerVolume(ParticipantId, f32),
    SetInput(InputSpec),
    SetOutput(OutputSpec),
    /// Change the video source; `VideoInput::None` turns the camera off.
    SetVideoInput(VideoInput),
    /// Switch echo cancellation, noise suppression and gain on or off.
    SetProcessing(chinwag_codec::ProcessingConfig),
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
        reason: String,
        retry_in: Duration,
    },
    /// The call cannot go on (wrong password, room full, relay unreachable at the start).
    Failed(TransportError),
    /// A device failed or could not be opened; the call goes on with `fallback`.
    DeviceProblem {
        error: String,
        fallback: String,
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

/// A running call. Dropping it leaves.
pub struct Call {
    commands: Sender<Command>,
    events: Receiver<CallEvent>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// What the threads share.
struct Shared {
    transport: Transport,
    stats: Mutex<CallStats>,
    muted: std::sync::atomic::AtomicBool,
    camera: std::sync::atomic::AtomicBool,
    clock: WallClock,
    /// The last frame this client sent, for a self-view.
    preview: Mutex<Option<Arc<chinwag_codec::VideoFrame>>>,
    /// Decoded video per peer, waiting to be shown.
    video: Mutex<HashMap<ParticipantId, video::PeerVideo>>,
}

impl Shared {
    fn set_muted(&self, muted: bool) {
        self.muted.store(muted, std::sync::atomic::Ordering::Relaxed);
        self.transport.set_state(muted, self.camera.load(std::sync::atomic::Ordering::Relaxed));
    }

    fn set_camera(&self, on: bool) {
        if self.camera.swap(on, std::sync::atomic::Ordering::Relaxed) != on {
            self.transport.set_state(self.muted.load(std::sync::atomic::Ordering::Relaxed), on);
        }
    }
}

/// Converts the engine's `Instant`s to wall-clock time for reports.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    instant: Instant,
    unix_us: u64,
}

impl WallClock {
    fn now() -> Self {
        let unix_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Self { instant: Instant::now(), unix_us }
    }

    fn unix_us(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.unix_us + after.as_micros() as u64,
            None => self.unix_us.saturating_sub(self.instant.duration_since(at).as_micros() as u64),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Call {
    /// Starts connecting and the audio threads. Errors that need no network (a bad address, a
    /// missing WAV file, an unwritable recording folder) are reported here; the rest arrive as
    /// events.
    pub fn start(config: CallConfig) -> Result<Call, EngineError> {
        if let Some(dir) = &config.record_dir {
            std::fs::create_dir_all(dir)
                .map_err(|source| EngineError::RecordDir { path: dir.clone(), source })?;
        }
        if let InputSpec::Wav(path) = &config.input {
            // Read it now so that a bad file is an error before anything connects.
            chinwag_capture::read_wav_48k_mono(path)?;
        }
        let transport = Transport::start(config.transport.clone())?;
        let shared = Arc::new(Shared {
            transport,
            stats: Mutex::new(CallStats::default()),
            muted: std::sync::atomic::AtomicBool::new(false),
            camera: std::sync::atomic::AtomicBool::new(false),
            clock: WallClock::now(),
            preview: Mutex::new(None),
            video: Mutex::new(HashMap::new()),
        });
        let (commands, command_rx) = crossbeam_channel::unbounded();
        let (event_tx, events) = crossbeam_channel::unbounded();
        let (send_commands, send_command_rx) = crossbeam_channel::unbounded();
        let (echo_tx, echo_rx) = crossbeam_channel::bounded(50);
        let (render_tx, render_rx) = crossbeam_channel::bounded(100);
        let echo = matches!(config.input, InputSpec::Echo);

        let send_shared = Arc::clone(&shared);
        let send_config = config.clone();
        let send_events = event_tx.clone();
        let send_thread = std::thread::Builder::new()
            .name("chinwag-send".into())
            .spawn(move || {
                send::run(send_config, send_shared, send_command_rx, echo_rx, render_rx, send_events)
            })
            .expect("the OS lets us start a thread");

        let (video_commands, video_command_rx) = crossbeam_channel::unbounded();
        let video_shared = Arc::clone(&shared);
        let video_settings = config.video.clone();
        let video_events = event_tx.clone();
        let video_thread = std::thread::Builder::new()
            .name("chinwag-video".into())
            .spawn(move || video::run_send(video_settings, video_shared, video_command_rx, video_events))
            .expect("the OS lets us start a thread");

        let (decode_tx, decode_rx) = video::decode_channel();
        let decode_shared = Arc::clone(&shared);
        let decode_thread = std::thread::Builder::new()
            .name("chinwag-video-decode".into())
            .spawn(move || video::run_decode(decode_shared, decode_rx))
            .expect("the OS lets us start a thread");

        let play_shared = Arc::clone(&shared);
        let links = play::Links {
            send: send_commands,
            video: video_commands,
            decode: decode_tx,
            echo: echo.then_some(echo_tx),
            render: render_tx,
        };
        let play_thread = std::thread::Builder::new()
            .name("chinwag-play".into())
            .spawn(move || play::run(config, play_shared, command_rx, links, event_tx))
            .expect("the OS lets us start a thread");
        Ok(Call {
            commands,
            events,
            shared,
            threads: vec![send_thread, play_thread, video_thread, decode_thread],
        })
    }

    pub fn events(&self) -> &Receiver<CallEvent> {
        &self.events
    }

    pub fn command(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// A snapshot of the call's statistics.
    pub fn stats(&self) -> CallStats {
        lock(&self.shared.stats).clone()
    }

    /// The newest video frame from `peer` that is due to be shown (lip-synced to its audio).
    pub fn video_frame(&self, peer: ParticipantId) -> Option<Arc<chinwag_codec::VideoFrame>> {
        video::current_frame(&self.shared, peer)
    }

    /// The last frame this client sent, for a self-view.
    pub fn preview(&self) -> Option<Arc<chinwag_codec::VideoFrame>> {
        lock(&self.shared.preview).clone()
    }

    /// Leaves and waits for the threads to finish.
    pub fn leave(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.commands.send(Command::Leave);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Opens an input as specified; `Echo` and `None` are handled by the send thread itself.
fn open_input(spec: &InputSpec) -> Result<Option<Box<dyn AudioSource>>, CaptureError> {
    Ok(match spec {
        InputSpec::Device(name) => Some(Box::new(chinwag_capture::MicSource::open(name.as_deref())?)),
        InputSpec::Tone(hz) => Some(Box::new(chinwag_capture::ToneSource::new(*hz, 0.5))),
        InputSpec::Wav(path) => Some(Box::new(chinwag_capture::WavSource::open(path)?)),
        InputSpec::Silence => Some(Box::new(chinwag_capture::SilenceSource::default())),
        InputSpec::None | InputSpec::Echo => None,
    })
}

fn open_output(spec: &OutputSpec) -> Result<Box<dyn AudioSink>, CaptureError> {
    Ok(match spec {
        OutputSpec::Device(name) => Box::new(chinwag_capture::SpeakerSink::open(name.as_deref())?),
        OutputSpec::None => Box::new(chinwag_capture::ClockSink::new(Duration::ZERO)),
    })
}

/// How often the default device is checked, when the call uses the default.
const DEFAULT_DEVICE_CHECK: Duration = Duration::from_secs(2);

/// Per-peer volumes, shared by command and playout.
type Volumes = HashMap<ParticipantId, f32>;

/// A peer's name made safe as a file name: path separators and control characters become `_`.
fn file_name(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_control() || matches!(c, '/' | '\\' | ':') { '_' } else { c }).collect();
    match cleaned.as_str() {
        "" | "." | ".." => "_".into(),
        _ => cleaned,
    }
}
