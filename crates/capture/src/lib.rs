//! Chinwag's audio and video devices, and synthetic stand-ins behind the same traits.
//!
//! This crate owns getting 48 kHz mono frames in ([`AudioSource`]) and out ([`AudioSink`]):
//! real devices through cpal ([`MicSource`], [`SpeakerSink`]), whose callbacks only move
//! samples between the device buffer and a lock-free `ringbuf` ring (no allocation, locking,
//! logging or blocking there), and synthetic ones that need no hardware ([`ToneSource`],
//! [`WavSource`], [`SilenceSource`], [`ClockSink`]), paced in real time like a device. It also
//! writes WAV files ([`WavRecorder`]). Video comes in through [`VideoSource`]: a camera through
//! nokhwa ([`CameraSource`], whose capture thread only hands the newest frame to a one-slot
//! queue) or a test pattern that needs no hardware ([`TestPatternSource`]).
//!
//! It deliberately does not encode, mix or decide anything: the engine's audio threads call
//! [`AudioSource::read_frame`] and [`AudioSink::write_frame`], which block only as long as a
//! device would, and its video thread calls [`VideoSource::next_frame`].

mod camera;
mod clip;
mod convert;
mod device;
mod pattern;
mod synthetic;
mod video;
mod wav;

use std::time::{Duration, Instant};

pub use camera::{CameraInfo, CameraSource, list_cameras};
pub use clip::{ClipSource, split_jpegs};
pub use device::{
    AUDIO_HOST_ENV, MicSource, SpeakerSink, default_input_name, default_output_name, input_device_names,
    output_device_names,
};
pub use pattern::{PATTERN_BARS, TestPatternSource};
pub use synthetic::{ClockSink, SilenceSource, ToneSource};
pub use video::{CapturedFrame, FrameContent, VideoSource};
pub use wav::{WavRecorder, WavSource, read_wav_48k_mono};

/// The rate of every frame that crosses these traits.
pub const SAMPLE_RATE: u32 = chinwag_codec::SAMPLE_RATE;

/// Something that produces audio: a microphone, a file, a tone.
pub trait AudioSource {
    /// Fills `frame` with the next 48 kHz mono samples, blocking until they exist (as a
    /// microphone would); returns the instant the first of them was captured.
    fn read_frame(&mut self, frame: &mut [f32]) -> Result<Instant, CaptureError>;

    /// The device's name, for a real device.
    fn device_name(&self) -> Option<&str> {
        None
    }

    /// What the device has had to make up for: glitches it recovered from by itself, and
    /// samples lost because the caller fell behind.
    fn trouble(&self) -> DeviceTrouble {
        DeviceTrouble::default()
    }
}

/// Something that plays audio: a speaker, or a clock that discards it.
pub trait AudioSink {
    /// Takes the next 48 kHz mono samples, blocking while the device has enough queued.
    fn write_frame(&mut self, frame: &[f32]) -> Result<(), CaptureError>;

    /// How long from now until a sample written now is heard.
    fn latency(&self) -> Duration;

    /// What the device has had to make up for: silence played because nothing was queued,
    /// and glitches it recovered from by itself.
    fn trouble(&self) -> DeviceTrouble {
        DeviceTrouble::default()
    }

    /// The device's name, for a real device.
    fn device_name(&self) -> Option<&str> {
        None
    }
}

/// A device's recoverable trouble so far: counted, never a reason to reopen it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceTrouble {
    /// Overruns or underruns the device reported and recovered from (ALSA xruns).
    pub xruns: u64,
    /// Other errors it reported and went on after (a backend's transient I/O errors).
    pub glitches: u64,
    /// Samples filled with silence (output) or lost because the ring was full (input).
    pub samples_lost: u64,
    /// Frames the caller handed over that were dropped because the device was not taking
    /// audio (output only).
    pub frames_dropped: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    #[error("no {0} device found")]
    NoDevice(&'static str),
    #[error("no {direction} device named \"{name}\"; available: {available}")]
    UnknownDevice { direction: &'static str, name: String, available: String },
    #[error("cannot open {direction} device \"{name}\": {reason}")]
    DeviceUnavailable { direction: &'static str, name: String, reason: String },
    #[error("{direction} device \"{name}\" stopped: {reason}")]
    DeviceLost { direction: &'static str, name: String, reason: String },
    #[error("cannot read WAV file {path}: {reason}")]
    Wav { path: std::path::PathBuf, reason: String },
    #[error("cannot write WAV file {path}: {reason}")]
    Record { path: std::path::PathBuf, reason: String },
    #[error("no camera found")]
    NoCamera,
    #[error("cannot play video clip {path}: {reason}")]
    Clip { path: std::path::PathBuf, reason: String },
    #[error("cannot open camera \"{name}\": {reason}")]
    CameraUnavailable { name: String, reason: String },
    #[error("camera \"{name}\" stopped: {reason}")]
    CameraLost { name: String, reason: String },
}

/// Paces a synthetic source or sink like a device: frame `n` is due `n` frame-durations after
/// the first.
#[derive(Debug, Default)]
struct Pacer {
    start: Option<Instant>,
    samples_done: u64,
}

impl Pacer {
    /// Waits until `samples` more samples are due; returns when the first of them was due.
    fn wait(&mut self, samples: usize) -> Instant {
        let start = *self.start.get_or_insert_with(Instant::now);
        let due = start + Duration::from_secs_f64(self.samples_done as f64 / f64::from(SAMPLE_RATE));
        self.samples_done += samples as u64;
        let ready = start + Duration::from_secs_f64(self.samples_done as f64 / f64::from(SAMPLE_RATE));
        let now = Instant::now();
        if ready > now {
            std::thread::sleep(ready - now);
        }
        due
    }
}
