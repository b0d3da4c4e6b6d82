//! The send thread: audio source → Opus → transport.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chinwag_capture::{AudioSource, SilenceSource};
use chinwag_codec::{VoiceEncoder, VoiceProcessor};
use chinwag_proto::{MediaFlags, MediaHeader, MediaKind, MediaTimestamp, ParticipantId, SeqNo};
use crossbeam_channel::{Receiver, Sender};
use tracing::warn;

use crate::{CallConfig, CallEvent, Command, InputSpec, Shared, lock};

/// One 10 ms frame of what this client played out, with the instant it was played.
pub(crate) type EchoFrame = (Vec<f32>, Instant);

/// One 10 ms frame sent to the speaker, and how long until it is heard.
pub(crate) type RenderFrame = (Vec<f32>, Duration);

/// Samples per processing step: sonora works on 10 ms.
const PROCESSING_SAMPLES: usize = 480;
/// The microphone's own buffering, added to the speaker's latency as the echo-delay hint.
const MIC_LATENCY: Duration = Duration::from_millis(10);
/// After this long without voice, the encoder drops to `SILENT_BITRATE_BPS`.
const SILENCE_BEFORE_SAVING: Duration = Duration::from_millis(300);
const SILENT_BITRATE_BPS: u32 = 8_000;

/// Where samples come from right now.
enum Input {
    Source(Box<dyn AudioSource>),
    /// The played-out mix, 10 ms at a time, gathered into encoder frames.
    Echo {
        pending: Vec<f32>,
        first_played: Option<Instant>,
    },
    Nothing,
}

pub(crate) fn run(
    config: CallConfig,
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    echo: Receiver<EchoFrame>,
    render: Receiver<RenderFrame>,
    events: Sender<CallEvent>,
) {
    let mut encoder = match VoiceEncoder::new(config.voice) {
        Ok(encoder) => encoder,
        Err(error) => {
            let _ = events.send(CallEvent::DeviceProblem {
                error: error.to_string(),
                fallback: "no audio sent".into(),
            });
            return;
        }
    };
    let n_samples = encoder.frame().samples();
    let mut frame = vec![0.0f32; n_samples];
    let mut packet = Vec::with_capacity(1500);
    let mut seq = SeqNo(0);
    let mut timestamp = MediaTimestamp(0);
    let mut first = true;
    let mut spec = config.input.clone();
    let mut input: Option<Input> = None;
    let mut default_checked = Instant::now();
    let mut processor = VoiceProcessor::new(config.processing);
    let mut last_voice = Instant::now();
    let mut saving = false;
    loop {
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Leave => return,
                Command::SetInput(new_spec) => {
                    spec = new_spec;
                    input = None;
                }
                Command::SetProcessing(processing) => processor.set_config(processing),
                _ => {}
            }
        }
        // Start the source only once joined, so that a file or tone starts at its beginning
        // for the others rather than into a connection that is not there yet.
        if !shared.transport.is_connected() || shared.transport.relay_time(Instant::now()).is_none() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if spec == InputSpec::Device(None) && default_checked.elapsed() >= crate::DEFAULT_DEVICE_CHECK {
            default_checked = Instant::now();
            let current = match &input {
                Some(Input::Source(source)) => source.device_name().map(str::to_owned),
                _ => None,
            };
            if let (Some(current), Some(default)) = (current, chinwag_capture::default_input_name())
                && current != default
            {
                input = None;
                let _ = events.send(CallEvent::DeviceChanged { direction: "input", name: default });
            }
        }
        let input = input.get_or_insert_with(|| open(&spec, &events));
        let captured_at = match input {
            Input::Nothing => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Input::Source(source) => match source.read_frame(&mut frame) {
                Ok(at) => at,
                Err(error) => {
                    warn!(%error, "audio input failed");
                    // The same device again first: ALSA through PulseAudio sometimes reports a
                    // transient I/O error that a fresh stream does not have.
                    if let Ok(Some(source)) = crate::open_input(&spec) {
                        let fallback = "the same microphone, reopened".into();
                        let _ = events.send(CallEvent::DeviceProblem { error: error.to_string(), fallback });
                        *input = Input::Source(source);
                        continue;
                    }
                    let fallback = fallback_after_error(&spec);
                    let _ = events.send(CallEvent::DeviceProblem {
                        error: error.to_string(),
                        fallback: describe(&fallback).into(),
                    });
                    spec = fallback;
                    *input = open(&spec, &events);
                    continue;
                }
            },
            Input::Echo { pending, first_played } => {
                let Ok((played, at)) = echo.recv_timeout(Duration::from_millis(50)) else { continue };
                first_played.get_or_insert(at);
                pending.extend_from_slice(&played);
                if pending.len() < n_samples {
                    continue;
                }
                frame.copy_from_slice(&pending[..n_samples]);
                pending.drain(..n_samples);
                first_played.take().expect("set above")
            }
        };
        // A real microphone hears the room: cancel the echo of what was played, suppress noise,
        // even out the level. Synthetic sources are clean and stay untouched.
        let from_microphone = matches!(spec, InputSpec::Device(_));
        if from_microphone {
            let voice = process_microphone(&mut processor, &render, &mut frame);
            let now = Instant::now();
            if voice {
                last_voice = now;
            }
            // Send less while nobody speaks: a lower bitrate until voice returns.
            let silent = now.saturating_duration_since(last_voice) >= SILENCE_BEFORE_SAVING;
            if silent != saving {
                saving = silent;
                let bitrate = if silent { SILENT_BITRATE_BPS } else { config.voice.bitrate_bps };
                let _ = encoder.set_bitrate(bitrate);
            }
            lock(&shared.stats).speaking = voice && !shared.muted.load(Ordering::Relaxed);
        } else {
            // Keep the far-end queue from going stale while no microphone is open.
            render.try_iter().for_each(drop);
        }
        let level = (frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32).sqrt();
        lock(&shared.stats).input_level = level;
        if shared.muted.load(Ordering::Relaxed) {
            continue;
        }
        let Some(capture_time) = shared.transport.relay_time(captured_at) else { continue };
        if let Err(error) = encoder.encode(&frame, &mut packet) {
            warn!(%error, "could not encode a frame");
            continue;
        }
        let header = MediaHeader {
            kind: MediaKind::Audio,
            flags: if first {
                MediaFlags::default().with(MediaFlags::RESTART)
            } else {
                MediaFlags::default()
            },
            sender: ParticipantId(0),
            seq,
            timestamp,
            capture_time,
        };
        shared.transport.send_media(&header, &packet);
        first = false;
        seq = seq.next();
        timestamp = timestamp.add_ticks(n_samples as u32);
        let mut stats = lock(&shared.stats);
        stats.audio_send_start_unix_us.get_or_insert(shared.clock.unix_us(captured_at));
        stats.audio_frames_sent += 1;
    }
}

/// Feeds the far end played since the last frame, then cleans `frame` in 10 ms steps; returns
/// whether any step held voice.
fn process_microphone(
    processor: &mut VoiceProcessor,
    render: &Receiver<RenderFrame>,
    frame: &mut [f32],
) -> bool {
    let mut latency = None;
    for (played, heard_after) in render.try_iter() {
        if let Err(error) = processor.process_render(&played) {
            warn!(%error, "the echo canceller refused a far-end frame");
        }
        latency = Some(heard_after);
    }
    if let Some(latency) = latency {
        processor.set_stream_delay(latency + MIC_LATENCY);
    }
    let mut voice = false;
    for chunk in frame.chunks_mut(PROCESSING_SAMPLES) {
        match processor.process_capture(chunk) {
            Ok(analysis) => voice |= analysis.voice,
            Err(error) => warn!(%error, "voice processing failed on a frame"),
        }
    }
    voice
}

fn open(spec: &InputSpec, events: &Sender<CallEvent>) -> Input {
    match spec {
        InputSpec::Echo => Input::Echo { pending: Vec::new(), first_played: None },
        InputSpec::None => Input::Nothing,
        other => match crate::open_input(other) {
            Ok(Some(source)) => Input::Source(source),
            Ok(None) => Input::Nothing,
            Err(error) => {
                let fallback = fallback_after_error(other);
                let _ = events.send(CallEvent::DeviceProblem {
                    error: error.to_string(),
                    fallback: describe(&fallback).into(),
                });
                match crate::open_input(&fallback) {
                    Ok(Some(source)) => Input::Source(source),
                    _ => Input::Source(Box::new(SilenceSource::default())),
                }
            }
        },
    }
}

/// A named microphone falls back to the default one; anything else to silence.
fn fallback_after_error(spec: &InputSpec) -> InputSpec {
    match spec {
        InputSpec::Device(Some(name)) if name != "default" => InputSpec::Device(None),
        _ => InputSpec::Silence,
    }
}

fn describe(spec: &InputSpec) -> &'static str {
    match spec {
        InputSpec::Device(_) => "the default microphone",
        _ => "silence",
    }
}
