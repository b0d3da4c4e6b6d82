//! The send thread: audio source → voice processing (a real microphone only) → the call
//! core's [`VoiceSender`] → transport.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use chinwag_call::VoiceSender;
use chinwag_capture::{AudioSource, SilenceSource};
use chinwag_codec::{ProcessingConfig, VoiceProcessor};
use crossbeam_channel::Receiver;
use tracing::{info, warn};

use crate::devices::{DefaultWatcher, ProblemOnce, describe_input, input_fallback, open_input};
use crate::play::MixFrame;
use crate::{CallConfig, CallEvent, Events, InputSpec, Shared};

/// Samples per processing step: the voice processor works on 10 ms.
const PROCESSING_SAMPLES: usize = 480;
/// The microphone's own buffering, added to the speaker's latency as the echo-delay hint.
const MIC_LATENCY: Duration = Duration::from_millis(10);

pub(crate) enum SendCommand {
    Input(InputSpec),
    Processing(ProcessingConfig),
    Leave,
}

/// Where samples come from right now.
enum Source {
    Device(Box<dyn AudioSource>),
    /// The played-out mix, 10 ms at a time, gathered into encoder frames.
    Echo {
        pending: Vec<f32>,
        first_played: Option<Instant>,
    },
    Nothing,
}

/// The input as asked for, opened once the call is joined.
struct Input {
    spec: InputSpec,
    source: Option<Source>,
    watcher: Option<DefaultWatcher>,
    problems: ProblemOnce,
}

pub(crate) fn run(
    config: CallConfig,
    shared: Arc<Shared>,
    commands: Receiver<SendCommand>,
    mixes: Receiver<MixFrame>,
    events: Events,
) {
    if config.raise_priority {
        crate::priority::raise_audio_thread("send");
    }
    let mut voice = match VoiceSender::new(config.voice) {
        Ok(voice) => voice,
        Err(error) => {
            let fallback = "no audio sent".into();
            events.send(CallEvent::DeviceProblem { error: error.to_string(), fallback });
            return;
        }
    };
    let mut frame = vec![0.0f32; voice.frame_samples()];
    let mut input =
        Input { spec: config.input.clone(), source: None, watcher: None, problems: ProblemOnce::default() };
    let mut processor = VoiceProcessor::new(config.processing);
    let mut trouble_published = Instant::now();
    loop {
        for command in commands.try_iter() {
            match command {
                SendCommand::Leave => return,
                SendCommand::Input(spec) => input.change(spec),
                SendCommand::Processing(processing) => processor.set_config(processing),
            }
        }
        // Start the source only once joined, so that a file or tone starts at its beginning
        // for the others rather than into a connection that is not there yet.
        if !shared.transport.is_connected() || shared.transport.relay_time(Instant::now()).is_none() {
            mixes.try_iter().for_each(drop);
            if let Ok(command) = commands.recv_timeout(Duration::from_millis(5)) {
                match command {
                    SendCommand::Leave => return,
                    SendCommand::Input(spec) => input.change(spec),
                    SendCommand::Processing(processing) => processor.set_config(processing),
                }
            }
            continue;
        }
        input.follow_default(&events);
        let Some(captured_at) = input.read(&mut frame, &mixes, &events) else { continue };
        // A real microphone hears the room: cancel the echo of what was played, suppress noise,
        // even out the level. Synthetic sources are clean and stay untouched.
        if matches!(input.spec, InputSpec::Device(_)) {
            let voice_heard = process_microphone(&mut processor, &mixes, &mut frame);
            shared.board.speaking.store(voice_heard && !shared.muted.load(Relaxed), Relaxed);
        } else if input.spec != InputSpec::Echo {
            // Keep the far-end queue from going stale while no microphone is open.
            mixes.try_iter().for_each(drop);
        }
        if let Some(Source::Device(source)) = &input.source
            && captured_at.saturating_duration_since(trouble_published) >= Duration::from_secs(1)
        {
            trouble_published = captured_at;
            shared.board.input_trouble.store(Arc::new(source.trouble()));
        }
        let level = (frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32).sqrt();
        shared.board.input_level.store(level.to_bits(), Relaxed);
        if shared.muted.load(Relaxed) {
            continue;
        }
        let Some(capture_time) = shared.transport.relay_time(captured_at) else { continue };
        let queued = match voice.handle_frame(&frame, capture_time) {
            Ok((header, packet)) => shared.transport.send_media(&header, packet),
            Err(error) => {
                warn!(%error, "could not encode a frame");
                continue;
            }
        };
        if !queued {
            continue;
        }
        let board = &shared.board;
        let _ = board.audio_send_start_unix_us.compare_exchange(
            0,
            shared.clock.unix_us(captured_at),
            Relaxed,
            Relaxed,
        );
        board.audio_frames_sent.fetch_add(1, Relaxed);
    }
}

impl Input {
    fn change(&mut self, spec: InputSpec) {
        self.spec = spec;
        self.source = None;
        self.watcher = None;
        self.problems.clear();
    }

    /// Follows the system's default microphone when the call uses the default.
    fn follow_default(&mut self, events: &Events) {
        let Some(name) = self.watcher.as_ref().and_then(DefaultWatcher::poll) else { return };
        let current = match &self.source {
            Some(Source::Device(source)) => source.device_name().map(str::to_owned),
            _ => None,
        };
        if current.as_deref() != Some(name.as_str()) {
            self.source = None;
            events.send(CallEvent::DeviceChanged { direction: "input", name });
        }
    }

    /// The next frame into `frame`; returns when its first sample was captured, or `None`
    /// when there is nothing this time round.
    fn read(&mut self, frame: &mut [f32], mixes: &Receiver<MixFrame>, events: &Events) -> Option<Instant> {
        if self.source.is_none() {
            self.source = Some(self.open(events));
        }
        match self.source.as_mut().expect("opened above") {
            Source::Nothing => {
                std::thread::sleep(Duration::from_millis(20));
                None
            }
            Source::Device(source) => match source.read_frame(frame) {
                Ok(at) => {
                    self.problems.clear();
                    Some(at)
                }
                Err(error) => {
                    warn!(%error, "audio input failed; reopening it");
                    // The same device again first; `open` falls back if that fails.
                    self.source = Some(self.open_after(events, Some(error.to_string())));
                    None
                }
            },
            Source::Echo { pending, first_played } => {
                let Ok(played) = mixes.recv_timeout(Duration::from_millis(50)) else { return None };
                first_played.get_or_insert(played.heard_at);
                pending.extend_from_slice(&played.samples);
                if pending.len() < frame.len() {
                    return None;
                }
                frame.copy_from_slice(&pending[..frame.len()]);
                pending.drain(..frame.len());
                first_played.take()
            }
        }
    }

    fn open(&mut self, events: &Events) -> Source {
        self.open_after(events, None)
    }

    /// Opens the input as asked, or its fallbacks; `failure` is why the last one stopped. A
    /// reopen that works is only logged; a fallback is told once.
    fn open_after(&mut self, events: &Events, failure: Option<String>) -> Source {
        let mut error = failure;
        loop {
            let opened = match &self.spec {
                InputSpec::Echo => return Source::Echo { pending: Vec::new(), first_played: None },
                InputSpec::None => return Source::Nothing,
                spec => open_input(spec),
            };
            match opened {
                Ok(Some(source)) => {
                    if error.is_some() {
                        info!(device = ?source.device_name(), "reopened the audio input");
                    }
                    self.watcher = (self.spec == InputSpec::Device(None))
                        .then(|| DefaultWatcher::start(true, source.device_name().map(str::to_owned)));
                    return Source::Device(source);
                }
                Ok(None) => return Source::Nothing,
                Err(open_error) => {
                    let fallback = input_fallback(&self.spec);
                    let reason = error.take().unwrap_or_else(|| open_error.to_string());
                    let fallback_name = describe_input(&fallback);
                    if self.problems.is_new(&reason, fallback_name) {
                        events
                            .send(CallEvent::DeviceProblem { error: reason, fallback: fallback_name.into() });
                    }
                    if self.spec == InputSpec::Silence {
                        return Source::Device(Box::new(SilenceSource::default()));
                    }
                    self.spec = fallback;
                }
            }
        }
    }
}

/// Feeds the far end played since the last frame, then cleans `frame` in 10 ms steps; returns
/// whether any step held voice.
fn process_microphone(processor: &mut VoiceProcessor, mixes: &Receiver<MixFrame>, frame: &mut [f32]) -> bool {
    let mut latency = None;
    for played in mixes.try_iter() {
        if let Err(error) = processor.process_render(&played.samples) {
            warn!(%error, "the echo canceller refused a far-end frame");
        }
        latency = Some(played.latency);
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
