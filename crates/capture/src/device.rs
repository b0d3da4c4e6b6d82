//! Real devices through cpal.
//!
//! The device callbacks only move samples between the device buffer and a `ringbuf` ring,
//! fill silence on underrun, count what they drop and note the device's own latency: no
//! allocation, no lock, no logging. Resampling to and from 48 kHz happens on the caller's
//! thread.
//!
//! A device that reports an error is not necessarily gone. Through ALSA (and most Linux
//! desktops give cpal ALSA's PulseAudio plugin) every underrun or overrun reaches the error
//! callback although cpal recovers from it, and the plugin reports transient I/O errors for
//! a while after every start and recovery. Those are counted; only an error that says the
//! device is gone, or a device whose callbacks stop for seconds, makes it lost (and the
//! engine reopen it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use chinwag_codec::Resampler;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{ErrorKind, FromSample, Sample as _, SampleFormat, SizedSample};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use crate::{AudioSink, AudioSource, CaptureError, DeviceTrouble, SAMPLE_RATE};

/// How long the ring between callback and caller can hold, in seconds.
const RING_SECONDS: f64 = 0.5;
/// The device period asked for where the host allows a fixed size, through ALSA: 20 ms for a
/// speaker (cpal makes the buffer two periods; ALSA's PulseAudio plugin, which needs three,
/// makes it 13 ms periods and 40 ms in all). cpal's default on ALSA is about 100 ms, which
/// alone would spoil a call's delay; 10 ms through the plugin underruns under load.
const DEVICE_BUFFER_SECONDS: f64 = 0.020;
/// The same for a microphone: 15 ms, which the plugin makes three 10 ms periods. A capture
/// device cannot underrun, and periods that divide the 10 and 20 ms voice frames let frames
/// go out evenly: 13 ms periods finished 20 ms frames 0 and 7 ms late by turns, and the
/// listener's jitter buffer grew to cover the unevenness.
const DEVICE_INPUT_BUFFER_SECONDS: f64 = 0.015;
/// The same through PulseAudio's own protocol, where the server keeps two periods as its
/// end-to-end latency target and its own timer-based scheduling rides out a late callback.
const PULSE_BUFFER_SECONDS: f64 = 0.010;
/// Set to `alsa` to use ALSA even where a PulseAudio server runs (for comparison, or a
/// server that misbehaves).
pub const AUDIO_HOST_ENV: &str = "CHINWAG_AUDIO_HOST";
/// How much audio the speaker ring is kept at, on top of the device's own buffer: 5 ms, so
/// that it holds 5 to 15 ms as the playout thread adds 10 ms ticks. The device's own buffer
/// (20 ms through PulseAudio) rides out a late tick of the playout thread, which runs at
/// real-time priority; 15 ms here cost 8 ms of mouth-to-ear through devices for nothing.
const SPEAKER_TARGET_SECONDS: f64 = 0.005;
/// How long the caller waits for the speaker to take audio (a little over two device
/// periods) before calling it stalled. While it is stalled, frames are dropped at the pace
/// they would have played: the playout thread keeps its own pace rather than stalling with
/// the device, so that received audio does not pile up behind it.
const SPEAKER_WAIT_LIMIT: Duration = Duration::from_millis(40);
/// A device whose callbacks have not run for this long is lost. Generous, because
/// PulseAudio's null sink takes up to 2 s to start serving a new stream.
const STALL_LIMIT: Duration = Duration::from_secs(4);

/// ALSA plugins that are not devices a person would choose: converters, mixers, sinks that
/// discard everything, surround up- and down-mixers, other sound servers' bridges.
const ALSA_PLUGINS: &[&str] = &[
    "null",
    "samplerate",
    "speexrate",
    "lavrate",
    "jack",
    "oss",
    "upmix",
    "vdownmix",
    "speex",
    "a52",
    "dmix",
    "dsnoop",
    "usbstream",
];

/// Whether a person would choose this device: not an ALSA plugin that only converts,
/// mixes or discards.
fn choosable(device: &cpal::Device) -> bool {
    let Ok(description) = device.description() else { return true };
    let Some(id) = description.driver() else { return true };
    let base = id.split(':').next().unwrap_or(id);
    !ALSA_PLUGINS.contains(&base) && !base.starts_with("surround")
}

/// The audio host for `direction`: for speakers, PulseAudio's own protocol where a server
/// runs (Linux), else the system's default (ALSA, CoreAudio, WASAPI); [`AUDIO_HOST_ENV`]`=alsa`
/// forces ALSA. Microphones stay on ALSA (through its pulse plugin where PulseAudio runs):
/// cpal's PulseAudio record stream cost the talker 37-41 % of a core against 12 % through
/// ALSA, and the delay to win was on the way out.
fn host(direction: &str) -> cpal::Host {
    #[cfg(target_os = "linux")]
    if (direction == "input"
        || std::env::var(AUDIO_HOST_ENV).is_ok_and(|host| host.eq_ignore_ascii_case("alsa")))
        && let Ok(alsa) = cpal::host_from_id(cpal::HostId::Alsa)
    {
        return alsa;
    }
    let _ = direction;
    cpal::default_host()
}

fn names(devices: Result<impl Iterator<Item = cpal::Device>, cpal::Error>) -> Vec<String> {
    let mut names: Vec<String> =
        devices.map(|devices| devices.filter(choosable).map(|d| d.to_string()).collect()).unwrap_or_default();
    // The same description can stand for several PCMs of one card; one entry is enough.
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.clone()));
    names
}

/// Names of the input devices the default host offers, leaving out plugins nobody would
/// choose.
pub fn input_device_names() -> Vec<String> {
    names(host("input").input_devices())
}

/// Names of the output devices the default host offers, leaving out plugins nobody would
/// choose.
pub fn output_device_names() -> Vec<String> {
    names(host("output").output_devices())
}

/// The name of the system's default input device, if it has one.
pub fn default_input_name() -> Option<String> {
    default_device(&host("input"), "input").map(|device| device.to_string())
}

/// The name of the system's default output device, if it has one.
pub fn default_output_name() -> Option<String> {
    default_device(&host("output"), "output").map(|device| device.to_string())
}

/// The host's default device for `direction`. Through PulseAudio, `PULSE_SINK` and
/// `PULSE_SOURCE` name it where set: libpulse's own way to give one program another default,
/// which ALSA's pulse plugin honours and cpal's PulseAudio client does not by itself.
fn default_device(host: &cpal::Host, direction: &str) -> Option<cpal::Device> {
    #[cfg(target_os = "linux")]
    if host.id() == cpal::HostId::PulseAudio {
        let variable = if direction == "input" { "PULSE_SOURCE" } else { "PULSE_SINK" };
        if let Ok(wanted) = std::env::var(variable) {
            let devices = if direction == "input" { host.input_devices() } else { host.output_devices() };
            let named = devices
                .ok()
                .and_then(|mut devices| devices.find(|device| device.id().is_ok_and(|id| id.id() == wanted)));
            if named.is_some() {
                return named;
            }
        }
    }
    if direction == "input" { host.default_input_device() } else { host.default_output_device() }
}

/// The device, and the period to ask of it on its host.
fn find_device(direction: &'static str, name: Option<&str>) -> Result<(cpal::Device, f64), CaptureError> {
    let host = host(direction);
    let period = match host.id() {
        #[cfg(target_os = "linux")]
        cpal::HostId::PulseAudio => PULSE_BUFFER_SECONDS,
        _ if direction == "input" => DEVICE_INPUT_BUFFER_SECONDS,
        _ => DEVICE_BUFFER_SECONDS,
    };
    find_on(&host, direction, name).map(|device| (device, period))
}

fn find_on(
    host: &cpal::Host,
    direction: &'static str,
    name: Option<&str>,
) -> Result<cpal::Device, CaptureError> {
    let default = default_device(host, direction);
    let all = match direction {
        "input" => host.input_devices().map(|d| d.collect::<Vec<_>>()),
        _ => host.output_devices().map(|d| d.collect::<Vec<_>>()),
    };
    match name {
        None | Some("default") => default.ok_or(CaptureError::NoDevice(direction)),
        Some(wanted) => {
            let all = all.unwrap_or_default();
            let names: Vec<String> = all.iter().map(|d| d.to_string()).collect();
            let index = names
                .iter()
                .position(|n| n == wanted)
                .or_else(|| names.iter().position(|n| n.to_lowercase().contains(&wanted.to_lowercase())));
            match index {
                Some(index) => Ok(all.into_iter().nth(index).expect("index came from this list")),
                None => Err(CaptureError::UnknownDevice {
                    direction,
                    name: wanted.to_owned(),
                    available: if names.is_empty() { "none".into() } else { names.join(", ") },
                }),
            }
        }
    }
}

/// The device's default configuration with a small fixed buffer of `period` seconds where the
/// host allows one.
fn stream_config(supported: &cpal::SupportedStreamConfig, period: f64) -> cpal::StreamConfig {
    let mut config = supported.config();
    let wanted = (f64::from(config.sample_rate) * period) as u32;
    if let cpal::SupportedBufferSize::Range { min, max } = supported.buffer_size() {
        config.buffer_size = cpal::BufferSize::Fixed(wanted.clamp(*min, *max));
    }
    config
}

/// State the callbacks share with the caller, all atomics.
#[derive(Default)]
struct Flags {
    /// The device is gone: an error that cpal does not recover from.
    lost: AtomicBool,
    xruns: AtomicU64,
    glitches: AtomicU64,
    /// Samples the callback could not move: ring full (input) or empty (output).
    dropped: AtomicU64,
    /// Callbacks run so far: a device that stops calling back has stalled.
    callbacks: AtomicU64,
    /// The device's own latency as the last callback saw it, in nanoseconds: from the
    /// callback to the speaker (output), or from the microphone to the callback (input).
    delay_ns: AtomicU64,
}

impl Flags {
    /// Sorts an error from the device: lost, an xrun it recovered from, or a glitch.
    fn handle_error(&self, error: &cpal::Error) {
        match error.kind() {
            ErrorKind::DeviceNotAvailable
            | ErrorKind::StreamInvalidated
            | ErrorKind::HostUnavailable
            | ErrorKind::PermissionDenied => self.lost.store(true, Relaxed),
            ErrorKind::Xrun => {
                self.xruns.fetch_add(1, Relaxed);
            }
            // Transient I/O errors (ALSA's PulseAudio plugin before its timing is known),
            // a busy or changed device, a refused real-time request: cpal goes on.
            _ => {
                self.glitches.fetch_add(1, Relaxed);
            }
        }
    }

    fn trouble(&self) -> DeviceTrouble {
        DeviceTrouble {
            xruns: self.xruns.load(Relaxed),
            glitches: self.glitches.load(Relaxed),
            samples_lost: self.dropped.load(Relaxed),
            frames_dropped: 0,
        }
    }

    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_ns.load(Relaxed))
    }
}

/// Watches a device's callbacks: it has stalled when they stop running.
struct Liveness {
    seen: u64,
    since: Instant,
}

impl Liveness {
    fn new() -> Self {
        Self { seen: 0, since: Instant::now() }
    }

    /// Whether the device has not called back for [`STALL_LIMIT`].
    fn stalled(&mut self, flags: &Flags) -> bool {
        let callbacks = flags.callbacks.load(Relaxed);
        if callbacks != self.seen {
            self.seen = callbacks;
            self.since = Instant::now();
            return false;
        }
        self.since.elapsed() > STALL_LIMIT
    }
}

/// The default or a named microphone.
pub struct MicSource {
    name: String,
    _stream: cpal::Stream,
    ring: HeapCons<f32>,
    rate: u32,
    resampler: Resampler,
    scratch: Vec<f32>,
    flags: Arc<Flags>,
    liveness: Liveness,
}

impl MicSource {
    /// Opens and starts the input device `name` (`None` or `"default"` for the default).
    pub fn open(name: Option<&str>) -> Result<Self, CaptureError> {
        let (device, period) = find_device("input", name)?;
        let device_name = device.to_string();
        let unavailable = |reason: String| CaptureError::DeviceUnavailable {
            direction: "input",
            name: device_name.clone(),
            reason,
        };
        let supported = device.default_input_config().map_err(|e| unavailable(e.to_string()))?;
        let rate = supported.sample_rate();
        let channels = usize::from(supported.channels()).max(1);
        let (producer, consumer) = HeapRb::<f32>::new((f64::from(rate) * RING_SECONDS) as usize).split();
        let flags = Arc::new(Flags::default());
        let config = stream_config(&supported, period);
        let stream = match supported.sample_format() {
            SampleFormat::F32 => build_input::<f32>(&device, config, channels, producer, &flags),
            SampleFormat::I16 => build_input::<i16>(&device, config, channels, producer, &flags),
            SampleFormat::I32 => build_input::<i32>(&device, config, channels, producer, &flags),
            SampleFormat::U16 => build_input::<u16>(&device, config, channels, producer, &flags),
            other => return Err(unavailable(format!("sample format {other} is not supported"))),
        }
        .map_err(|e| unavailable(e.to_string()))?;
        stream.play().map_err(|e| unavailable(e.to_string()))?;
        let resampler = Resampler::new(rate, SAMPLE_RATE).map_err(|e| unavailable(e.to_string()))?;
        Ok(Self {
            name: device_name,
            _stream: stream,
            ring: consumer,
            rate,
            resampler,
            scratch: vec![0.0; 4096],
            flags,
            liveness: Liveness::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

fn build_input<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    channels: usize,
    mut producer: HeapProd<f32>,
    flags: &Arc<Flags>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let data_flags = Arc::clone(flags);
    let error_flags = Arc::clone(flags);
    device.build_input_stream::<T, _, _>(
        config,
        move |data: &[T], info: &cpal::InputCallbackInfo| {
            let stamp = info.timestamp();
            let delay = stamp.callback.saturating_duration_since(stamp.capture);
            data_flags.delay_ns.store(delay.as_nanos() as u64, Relaxed);
            data_flags.callbacks.fetch_add(1, Relaxed);
            for frame in data.chunks(channels) {
                let mono = frame.iter().map(|&s| f32::from_sample(s)).sum::<f32>() / channels as f32;
                if producer.try_push(mono).is_err() {
                    data_flags.dropped.fetch_add(1, Relaxed);
                }
            }
        },
        move |error| error_flags.handle_error(&error),
        None,
    )
}

impl AudioSource for MicSource {
    fn device_name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn trouble(&self) -> DeviceTrouble {
        self.flags.trouble()
    }

    fn read_frame(&mut self, frame: &mut [f32]) -> Result<Instant, CaptureError> {
        loop {
            let n = self.ring.pop_slice(&mut self.scratch);
            self.resampler.push(&self.scratch[..n]);
            if self.resampler.available() >= frame.len() {
                self.resampler.pull(frame);
                // Everything still buffered was captured after this frame, and the device held
                // the newest sample for its own latency before the callback saw it.
                let queued = self.resampler.available() as f64 / f64::from(SAMPLE_RATE)
                    + self.ring.occupied_len() as f64 / f64::from(self.rate);
                let frame_seconds = frame.len() as f64 / f64::from(SAMPLE_RATE);
                let back = Duration::from_secs_f64(queued + frame_seconds) + self.flags.delay();
                let now = Instant::now();
                return Ok(now.checked_sub(back).unwrap_or(now));
            }
            let lost = |reason: &str| CaptureError::DeviceLost {
                direction: "input",
                name: self.name.clone(),
                reason: reason.to_owned(),
            };
            if self.flags.lost.load(Relaxed) {
                return Err(lost("the device is gone"));
            }
            if self.liveness.stalled(&self.flags) {
                return Err(lost("no audio for 4 s"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The default or a named speaker.
pub struct SpeakerSink {
    name: String,
    _stream: cpal::Stream,
    ring: HeapProd<f32>,
    rate: u32,
    resampler: Resampler,
    scratch: Vec<f32>,
    flags: Arc<Flags>,
    liveness: Liveness,
    frames_dropped: u64,
    /// While the device takes no audio: the callbacks seen when it stopped, and when the
    /// next frame would have been due.
    stalled: Option<(u64, Instant)>,
}

impl SpeakerSink {
    /// Opens and starts the output device `name` (`None` or `"default"` for the default).
    pub fn open(name: Option<&str>) -> Result<Self, CaptureError> {
        let (device, period) = find_device("output", name)?;
        let device_name = device.to_string();
        let unavailable = |reason: String| CaptureError::DeviceUnavailable {
            direction: "output",
            name: device_name.clone(),
            reason,
        };
        let supported = device.default_output_config().map_err(|e| unavailable(e.to_string()))?;
        let rate = supported.sample_rate();
        let channels = usize::from(supported.channels()).max(1);
        let (producer, consumer) = HeapRb::<f32>::new((f64::from(rate) * RING_SECONDS) as usize).split();
        let flags = Arc::new(Flags::default());
        let config = stream_config(&supported, period);
        let stream = match supported.sample_format() {
            SampleFormat::F32 => build_output::<f32>(&device, config, channels, consumer, &flags),
            SampleFormat::I16 => build_output::<i16>(&device, config, channels, consumer, &flags),
            SampleFormat::I32 => build_output::<i32>(&device, config, channels, consumer, &flags),
            SampleFormat::U16 => build_output::<u16>(&device, config, channels, consumer, &flags),
            other => return Err(unavailable(format!("sample format {other} is not supported"))),
        }
        .map_err(|e| unavailable(e.to_string()))?;
        stream.play().map_err(|e| unavailable(e.to_string()))?;
        let resampler = Resampler::new(SAMPLE_RATE, rate).map_err(|e| unavailable(e.to_string()))?;
        Ok(Self {
            name: device_name,
            _stream: stream,
            ring: producer,
            rate,
            resampler,
            scratch: vec![0.0; 8192],
            flags,
            liveness: Liveness::new(),
            frames_dropped: 0,
            stalled: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

fn build_output<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    channels: usize,
    mut consumer: HeapCons<f32>,
    flags: &Arc<Flags>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    let data_flags = Arc::clone(flags);
    let error_flags = Arc::clone(flags);
    device.build_output_stream::<T, _, _>(
        config,
        move |data: &mut [T], info: &cpal::OutputCallbackInfo| {
            let stamp = info.timestamp();
            let delay = stamp.playback.saturating_duration_since(stamp.callback);
            data_flags.delay_ns.store(delay.as_nanos() as u64, Relaxed);
            data_flags.callbacks.fetch_add(1, Relaxed);
            for frame in data.chunks_mut(channels) {
                let sample = consumer.try_pop().unwrap_or_else(|| {
                    data_flags.dropped.fetch_add(1, Relaxed);
                    0.0
                });
                frame.fill(T::from_sample(sample));
            }
        },
        move |error| error_flags.handle_error(&error),
        None,
    )
}

impl AudioSink for SpeakerSink {
    fn device_name(&self) -> Option<&str> {
        Some(&self.name)
    }

    /// Queues `frame` for the speaker, waiting while the speaker has enough queued, but never
    /// long: a device that stops taking audio costs frames, not the caller's pace.
    fn write_frame(&mut self, frame: &[f32]) -> Result<(), CaptureError> {
        let lost = |name: &str, reason: &str| CaptureError::DeviceLost {
            direction: "output",
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        if self.flags.lost.load(Relaxed) {
            return Err(lost(&self.name, "the device is gone"));
        }
        let frame_time = Duration::from_secs_f64(frame.len() as f64 / f64::from(SAMPLE_RATE));
        if let Some((callbacks, due)) = self.stalled {
            if self.flags.callbacks.load(Relaxed) == callbacks {
                // Still stalled: drop this frame when it would have played.
                if self.liveness.stalled(&self.flags) {
                    return Err(lost(&self.name, "it stopped taking audio for 4 s"));
                }
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                self.stalled = Some((callbacks, due + frame_time));
                self.frames_dropped += 1;
                return Ok(());
            }
            self.stalled = None;
        }
        self.resampler.push(frame);
        let n = self.resampler.pull(&mut self.scratch);
        let target = (f64::from(self.rate) * SPEAKER_TARGET_SECONDS) as usize;
        let waiting_since = Instant::now();
        while self.ring.occupied_len() > target {
            if self.flags.lost.load(Relaxed) {
                return Err(lost(&self.name, "the device is gone"));
            }
            if waiting_since.elapsed() > SPEAKER_WAIT_LIMIT {
                self.stalled = Some((self.flags.callbacks.load(Relaxed), Instant::now() + frame_time));
                self.frames_dropped += 1;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let pushed = self.ring.push_slice(&self.scratch[..n]);
        let _dropped_because_ring_is_full = n - pushed;
        Ok(())
    }

    fn latency(&self) -> Duration {
        let queued = self.ring.occupied_len() as f64 / f64::from(self.rate);
        Duration::from_secs_f64(queued) + self.flags.delay()
    }

    fn trouble(&self) -> DeviceTrouble {
        DeviceTrouble { frames_dropped: self.frames_dropped, ..self.flags.trouble() }
    }
}
