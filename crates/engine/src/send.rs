//! The send thread: audio source → Opus → transport.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chinwag_capture::{AudioSource, SilenceSource};
use chinwag_codec::VoiceEncoder;
use chinwag_proto::{MediaFlags, MediaHeader, MediaKind, MediaTimestamp, ParticipantId, SeqNo};
use crossbeam_channel::{Receiver, Sender};
use tracing::warn;

use crate::{CallConfig, CallEvent, Command, InputSpec, Shared, lock};

/// One 10 ms frame of what this client played out, with the instant it was played.
pub(crate) type EchoFrame = (Vec<f32>, Instant);

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
    loop {
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Leave => return,
                Command::SetInput(new_spec) => {
                    spec = new_spec;
                    input = None;
                }
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
