//! Real devices through cpal.
//!
//! The device callbacks only move samples between the device buffer and a `ringbuf` ring,
//! fill silence on underrun and count what they drop: no allocation, no lock, no logging.
//! Resampling to and from 48 kHz happens on the caller's thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chinwag_codec::Resampler;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample as _, SampleFormat, SizedSample};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use crate::{AudioSink, AudioSource, CaptureError, SAMPLE_RATE};

/// How long the ring between callback and caller can hold, in seconds.
const RING_SECONDS: f64 = 0.5;
/// The device buffer asked for where the host allows a fixed size: 10 ms. cpal's default on
/// ALSA is about 100 ms, which alone would spoil a call's delay.
const DEVICE_BUFFER_SECONDS: f64 = 0.010;
/// How much audio the speaker ring is kept at: enough to ride out a scheduling hiccup.
const SPEAKER_TARGET_SECONDS: f64 = 0.030;
/// How long a caller waits for a device that has stopped moving before calling it lost.
const STALL_LIMIT: Duration = Duration::from_secs(2);

/// Names of the input devices the default host offers.
pub fn input_device_names() -> Vec<String> {
    cpal::default_host()
        .input_devices()
        .map(|devices| devices.map(|d| d.to_string()).collect())
        .unwrap_or_default()
}

/// Names of the output devices the default host offers.
pub fn output_device_names() -> Vec<String> {
    cpal::default_host()
        .output_devices()
        .map(|devices| devices.map(|d| d.to_string()).collect())
        .unwrap_or_default()
}

/// The name of the system's default input device, if it has one.
pub fn default_input_name() -> Option<String> {
    cpal::default_host().default_input_device().map(|device| device.to_string())
}

/// The name of the system's default output device, if it has one.
pub fn default_output_name() -> Option<String> {
    cpal::default_host().default_output_device().map(|device| device.to_string())
}

fn find_device(direction: &'static str, name: Option<&str>) -> Result<cpal::Device, CaptureError> {
    let host = cpal::default_host();
    let (default, all) = match direction {
        "input" => (host.default_input_device(), host.input_devices().map(|d| d.collect::<Vec<_>>())),
        _ => (host.default_output_device(), host.output_devices().map(|d| d.collect::<Vec<_>>())),
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

/// The device's default configuration with a small fixed buffer where the host allows one.
fn stream_config(supported: &cpal::SupportedStreamConfig) -> cpal::StreamConfig {
    let mut config = supported.config();
    let wanted = (f64::from(config.sample_rate) * DEVICE_BUFFER_SECONDS) as u32;
    if let cpal::SupportedBufferSize::Range { min, max } = supported.buffer_size() {
        config.buffer_size = cpal::BufferSize::Fixed(wanted.clamp(*min, *max));
    }
    config
}

/// State the callbacks share with the caller, all atomics.
#[derive(Default)]
struct Flags {
    failed: AtomicBool,
    /// Samples the callback could not move: ring full (input) or empty (output).
    dropped: AtomicU64,
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
}

impl MicSource {
    /// Opens and starts the input device `name` (`None` or `"default"` for the default).
    pub fn open(name: Option<&str>) -> Result<Self, CaptureError> {
        let device = find_device("input", name)?;
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
        let config = stream_config(&supported);
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
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Samples the callback dropped because the ring was full (the caller fell behind).
    pub fn dropped_samples(&self) -> u64 {
        self.flags.dropped.load(Ordering::Relaxed)
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
        move |data: &[T], _| {
            for frame in data.chunks(channels) {
                let mono = frame.iter().map(|&s| f32::from_sample(s)).sum::<f32>() / channels as f32;
                if producer.try_push(mono).is_err() {
                    data_flags.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        },
        move |_error| error_flags.failed.store(true, Ordering::Relaxed),
        None,
    )
}

impl AudioSource for MicSource {
    fn device_name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn read_frame(&mut self, frame: &mut [f32]) -> Result<Instant, CaptureError> {
        let waiting_since = Instant::now();
        loop {
            let n = self.ring.pop_slice(&mut self.scratch);
            self.resampler.push(&self.scratch[..n]);
            if self.resampler.available() >= frame.len() {
                self.resampler.pull(frame);
                // Everything still buffered was captured after this frame.
                let queued = self.resampler.available() as f64 / f64::from(SAMPLE_RATE)
                    + self.ring.occupied_len() as f64 / f64::from(self.rate);
                let frame_seconds = frame.len() as f64 / f64::from(SAMPLE_RATE);
                let back = Duration::from_secs_f64(queued + frame_seconds);
                let now = Instant::now();
                return Ok(now.checked_sub(back).unwrap_or(now));
            }
            let lost = |reason: &str| CaptureError::DeviceLost {
                direction: "input",
                name: self.name.clone(),
                reason: reason.to_owned(),
            };
            if self.flags.failed.load(Ordering::Relaxed) {
                return Err(lost("the device reported an error"));
            }
            if waiting_since.elapsed() > STALL_LIMIT {
                return Err(lost("no audio for 2 s"));
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
    buffer: Duration,
    resampler: Resampler,
    scratch: Vec<f32>,
    flags: Arc<Flags>,
}

impl SpeakerSink {
    /// Opens and starts the output device `name` (`None` or `"default"` for the default).
    pub fn open(name: Option<&str>) -> Result<Self, CaptureError> {
        let device = find_device("output", name)?;
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
        let config = stream_config(&supported);
        let buffer = match config.buffer_size {
            cpal::BufferSize::Fixed(frames) => Duration::from_secs_f64(f64::from(frames) / f64::from(rate)),
            cpal::BufferSize::Default => Duration::from_millis(20),
        };
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
            buffer,
            resampler,
            scratch: vec![0.0; 8192],
            flags,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Samples of silence the callback played because nothing was queued.
    pub fn underrun_samples(&self) -> u64 {
        self.flags.dropped.load(Ordering::Relaxed)
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
        move |data: &mut [T], _| {
            for frame in data.chunks_mut(channels) {
                let sample = consumer.try_pop().unwrap_or_else(|| {
                    data_flags.dropped.fetch_add(1, Ordering::Relaxed);
                    0.0
                });
                frame.fill(T::from_sample(sample));
            }
        },
        move |_error| error_flags.failed.store(true, Ordering::Relaxed),
        None,
    )
}

impl AudioSink for SpeakerSink {
    fn device_name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn write_frame(&mut self, frame: &[f32]) -> Result<(), CaptureError> {
        self.resampler.push(frame);
        let n = self.resampler.pull(&mut self.scratch);
        let target = (f64::from(self.rate) * SPEAKER_TARGET_SECONDS) as usize;
        let waiting_since = Instant::now();
        while self.ring.occupied_len() > target {
            let failed = self.flags.failed.load(Ordering::Relaxed);
            if failed || waiting_since.elapsed() > STALL_LIMIT {
                let reason =
                    if failed { "the device reported an error" } else { "the device stopped taking audio" };
                return Err(CaptureError::DeviceLost {
                    direction: "output",
                    name: self.name.clone(),
                    reason: reason.into(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let pushed = self.ring.push_slice(&self.scratch[..n]);
        let _dropped_because_ring_is_full = n - pushed;
        Ok(())
    }

    fn latency(&self) -> Duration {
        Duration::from_secs_f64(self.ring.occupied_len() as f64 / f64::from(self.rate)) + self.buffer
    }
}
