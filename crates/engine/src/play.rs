//! The playout thread: the connection's audio and roster events into the call core's
//! [`Playout`], its mix to the sink every 10 ms (paced by the sink itself), per-peer
//! recordings, and the room's figures published for [`crate::Call::stats`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_call::{Playout, TICK_SAMPLES};
use chinwag_capture::{AudioSink, ClockSink, WavRecorder};
use chinwag_jitter::JitterConfig;
use chinwag_proto::{ParticipantId, Peer};
use chinwag_transport::TransportEvent;
use crossbeam_channel::{Receiver, Sender};
use tracing::{info, warn};

use crate::devices::{DefaultWatcher, ProblemOnce, describe_output, open_output, output_fallback};
use crate::stats::{PeerAudioPart, PlayPart};
use crate::{CallConfig, CallEvent, Events, OutputSpec, Shared, file_name};

/// How often the room's figures are published.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

pub(crate) enum PlayCommand {
    Volume(ParticipantId, f32),
    Output(OutputSpec),
    Leave,
}

/// One 10 ms frame of the mix as it went to the speaker.
pub(crate) struct MixFrame {
    pub(crate) samples: Vec<f32>,
    /// When its first sample is heard.
    pub(crate) heard_at: Instant,
    /// How long the speaker holds it before it is heard: the echo canceller's delay hint.
    pub(crate) latency: Duration,
}

/// The playout thread's line to the send thread.
pub(crate) struct Links {
    /// Every mix, for the echo canceller's far end and for an echo service.
    pub(crate) mixes: Sender<MixFrame>,
    /// The send thread sends the mix back to the room: every frame must reach it.
    pub(crate) echo: bool,
}

pub(crate) fn run(
    config: CallConfig,
    shared: Arc<Shared>,
    commands: Receiver<PlayCommand>,
    links: Links,
    events: Events,
) {
    if config.raise_priority {
        crate::priority::raise_audio_thread("playout");
    }
    let mut output = Output::open(config.output.clone(), &events);
    let mut core = Playout::new(config.jitter.clone()).unwrap_or_else(|error| {
        warn!(%error, "invalid jitter configuration; using the default");
        Playout::new(JitterConfig::default()).expect("the default configuration is valid")
    });
    let mut room =
        Room { part: PlayPart::default(), recorders: HashMap::new(), record_dir: config.record_dir };
    let mut mix = vec![0.0f32; TICK_SAMPLES];
    let mut published = Instant::now();
    loop {
        for command in commands.try_iter() {
            match command {
                PlayCommand::Volume(id, volume) => core.set_volume(id, volume),
                PlayCommand::Output(spec) => output = Output::open(spec, &events),
                PlayCommand::Leave => {
                    room.finish(&mut core, &shared);
                    events.send(CallEvent::Left);
                    return;
                }
            }
        }
        let mut roster_changed = false;
        for event in shared.transport.events().try_iter() {
            roster_changed |= room.handle_event(event, &mut core, &events);
        }

        let now = Instant::now();
        let latency = output.sink.latency();
        let heard_at = now + latency;
        core.poll_mix(now, shared.transport.relay_time(heard_at), &mut mix);
        room.record(&core, heard_at, &shared);
        if links.echo || !links.mixes.is_full() {
            let frame = MixFrame { samples: mix.clone(), heard_at, latency };
            let _dropped_because_the_send_thread_is_behind = links.mixes.try_send(frame);
        }
        if roster_changed || now.saturating_duration_since(published) >= PUBLISH_EVERY {
            published = now;
            room.part.output_trouble = output.sink.trouble();
            room.publish(&core, &shared);
        }
        output.follow_default(&events);
        output.write(&mix, &events);
    }
}

/// Who is in the room, as the playout thread keeps it, and their recordings.
struct Room {
    part: PlayPart,
    /// One recording per name: a peer who rejoins (with a new id) goes on in the same file.
    recorders: HashMap<String, WavRecorder>,
    record_dir: Option<std::path::PathBuf>,
}

impl Room {
    /// Applies one connection event; returns whether the roster changed.
    fn handle_event(&mut self, event: TransportEvent, core: &mut Playout, events: &Events) -> bool {
        match event {
            TransportEvent::Audio(media) => {
                core.handle_audio(media.arrived, &media.header, &media.payload);
                return false;
            }
            TransportEvent::Rtt(rtt) => {
                self.part.rtt_ms.record(rtt);
                return false;
            }
            TransportEvent::Joined { id, room, peers, rejoined } => {
                if rejoined {
                    for peer in self.part.peers.iter_mut().filter(|peer| peer.present) {
                        if let Some(last) = core.peer_stats(peer.id) {
                            peer.audio = last.clone();
                        }
                        peer.present = false;
                    }
                    core.handle_rejoined();
                }
                for peer in &peers {
                    self.add_peer(peer, core);
                }
                self.part.id = Some(id);
                self.part.room = Some(room.clone());
                self.part.connected = true;
                events.send(CallEvent::Joined { id, room, peers, rejoined });
            }
            TransportEvent::PeerJoined(peer) => {
                self.add_peer(&peer, core);
                events.send(CallEvent::PeerJoined(peer));
            }
            TransportEvent::PeerLeft(id) => {
                let last = core.peer_stats(id).cloned();
                if let Some(peer) = self.peer_mut(id) {
                    // Its figures as they ended, not as last published.
                    peer.audio = last.unwrap_or_else(|| peer.audio.clone());
                    peer.present = false;
                }
                core.handle_peer_left(id);
                events.send(CallEvent::PeerLeft(id));
            }
            TransportEvent::PeerState(state) => {
                if let Some(peer) = self.peer_mut(state.id) {
                    peer.muted = state.muted;
                    peer.camera = state.camera;
                }
                events.send(CallEvent::PeerState { id: state.id, muted: state.muted, camera: state.camera });
            }
            TransportEvent::Disconnected { error, retry_in } => {
                self.part.connected = false;
                events.send(CallEvent::Reconnecting { error, retry_in });
            }
            TransportEvent::Failed(error) => {
                self.part.connected = false;
                events.send(CallEvent::Failed(error));
            }
            TransportEvent::Left => {}
        }
        true
    }

    fn peer_mut(&mut self, id: ParticipantId) -> Option<&mut PeerAudioPart> {
        self.part.peers.iter_mut().rev().find(|peer| peer.id == id && peer.present)
    }

    fn add_peer(&mut self, peer: &Peer, core: &mut Playout) {
        core.handle_peer_joined(peer.id, &peer.name);
        if let Some(dir) = &self.record_dir
            && !self.recorders.contains_key(&peer.name)
        {
            let path = dir.join(format!("{}.wav", file_name(&peer.name)));
            match WavRecorder::create(&path) {
                Ok(recorder) => {
                    self.recorders.insert(peer.name.clone(), recorder);
                }
                Err(error) => warn!(%error, "cannot record"),
            }
        }
        let record_start_unix_us = self
            .part
            .peers
            .iter()
            .find(|earlier| earlier.name == peer.name)
            .and_then(|earlier| earlier.record_start_unix_us);
        self.part.peers.push(PeerAudioPart {
            id: peer.id,
            name: peer.name.clone(),
            present: true,
            muted: peer.muted,
            camera: peer.camera,
            record_start_unix_us,
            audio: Default::default(),
        });
    }

    /// Writes the last tick to each peer's recording; recordings keep their timeline while a
    /// peer is away, with silence where nothing arrived.
    fn record(&mut self, core: &Playout, heard_at: Instant, shared: &Shared) {
        if self.recorders.is_empty() {
            return;
        }
        let silence = [0.0f32; TICK_SAMPLES];
        let mut ticks: HashMap<&str, &[f32]> = core.last_tick().map(|(_, name, tick)| (name, tick)).collect();
        for (name, recorder) in &mut self.recorders {
            let samples = ticks.remove(name.as_str()).unwrap_or(&silence);
            if recorder.samples() == 0 {
                let start = shared.clock.unix_us(heard_at);
                for peer in self.part.peers.iter_mut().filter(|peer| &peer.name == name) {
                    peer.record_start_unix_us.get_or_insert(start);
                }
            }
            if let Err(error) = recorder.write(samples) {
                warn!(%error, "recording failed");
            }
        }
    }

    fn publish(&mut self, core: &Playout, shared: &Shared) {
        for peer in self.part.peers.iter_mut().filter(|peer| peer.present) {
            if let Some(stats) = core.peer_stats(peer.id) {
                peer.audio = stats.clone();
            }
        }
        shared.board.publish_play(&self.part);
    }

    fn finish(&mut self, core: &mut Playout, shared: &Shared) {
        for recorder in self.recorders.values_mut() {
            if let Err(error) = recorder.finish() {
                warn!(%error, "cannot finish a recording");
            }
        }
        self.publish(core, shared);
    }
}

/// The sink and how it was asked for.
struct Output {
    spec: OutputSpec,
    sink: Box<dyn AudioSink>,
    watcher: Option<DefaultWatcher>,
    problems: ProblemOnce,
}

impl Output {
    /// Opens `spec`, falling back to the default speaker and then to no sound output.
    fn open(spec: OutputSpec, events: &Events) -> Self {
        let mut problems = ProblemOnce::default();
        let (spec, sink) = open_with_fallbacks(spec, None, &mut problems, events);
        let watcher = (spec == OutputSpec::Device(None))
            .then(|| DefaultWatcher::start(false, sink.device_name().map(str::to_owned)));
        Self { spec, sink, watcher, problems }
    }

    /// Follows the system's default speaker when the call uses the default.
    fn follow_default(&mut self, events: &Events) {
        let Some(name) = self.watcher.as_ref().and_then(DefaultWatcher::poll) else { return };
        if self.sink.device_name() == Some(name.as_str()) {
            return;
        }
        match open_output(&self.spec) {
            Ok(sink) => {
                self.sink = sink;
                events.send(CallEvent::DeviceChanged { direction: "output", name });
            }
            Err(error) => warn!(%error, "cannot open the new default speaker; staying on the old one"),
        }
    }

    /// Hands the mix to the sink; on failure, reopens or falls back. The call goes on in
    /// every case.
    fn write(&mut self, mix: &[f32], events: &Events) {
        match self.sink.write_frame(mix) {
            Ok(()) => {}
            Err(error) => {
                warn!(%error, "audio output failed");
                let (spec, sink) = open_with_fallbacks(
                    self.spec.clone(),
                    Some(error.to_string()),
                    &mut self.problems,
                    events,
                );
                self.spec = spec;
                self.sink = sink;
            }
        }
    }
}

/// The same device again (a device that failed once may work when reopened), then the
/// fallbacks. A reopen that works is only logged; a fallback is told once.
fn open_with_fallbacks(
    spec: OutputSpec,
    failure: Option<String>,
    problems: &mut ProblemOnce,
    events: &Events,
) -> (OutputSpec, Box<dyn AudioSink>) {
    let mut candidate = spec;
    let mut error = failure;
    loop {
        match open_output(&candidate) {
            Ok(sink) => {
                if error.is_some() {
                    info!(device = ?sink.device_name(), "reopened the audio output");
                }
                return (candidate, sink);
            }
            Err(open_error) => {
                let fallback = output_fallback(&candidate);
                let reason = error.take().unwrap_or_else(|| open_error.to_string());
                let fallback_name = describe_output(&fallback);
                if problems.is_new(&reason, fallback_name) {
                    events.send(CallEvent::DeviceProblem { error: reason, fallback: fallback_name.into() });
                }
                if candidate == OutputSpec::None {
                    return (OutputSpec::None, Box::new(ClockSink::new(Duration::ZERO)));
                }
                candidate = fallback;
            }
        }
    }
}
