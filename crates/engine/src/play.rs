//! The playout thread: transport events in; per-peer jitter buffers, decoders and recordings;
//! the mix out to the sink, every 10 ms, paced by the sink itself.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_capture::{AudioSink, ClockSink, WavRecorder};
use chinwag_codec::{CODEC_DELAY, VoiceDecoder};
use chinwag_jitter::{JitterBuffer, Playout};
use chinwag_proto::{MediaKind, ParticipantId, Peer, RelayTime};
use chinwag_transport::TransportEvent;
use crossbeam_channel::{Receiver, Sender};
use tracing::warn;

use crate::send::EchoFrame;
use crate::stats::PeerStats;
use crate::{CallConfig, CallEvent, Command, OutputSpec, Shared, Volumes, file_name, lock, open_output};

/// The mixer's period: 10 ms at 48 kHz.
const TICK_SAMPLES: usize = 480;
/// How much silence one `Playout::Silence` stands for: 2.5 ms, the finest Opus step.
const SILENCE_STEP_SAMPLES: usize = 120;
/// Capture times remembered per peer, to pair with frames as they are played.
const CAPTURES_KEPT: usize = 256;

/// One remote participant's audio path.
struct PeerAudio {
    id: ParticipantId,
    name: String,
    jitter: JitterBuffer,
    decoder: VoiceDecoder,
    /// Decoded samples not yet mixed.
    decoded: VecDeque<f32>,
    /// (media timestamp, capture time) of recently arrived frames.
    captures: VecDeque<(u32, RelayTime)>,
}

/// The playout thread's lines to the other threads.
pub(crate) struct Links {
    pub(crate) send: Sender<Command>,
    pub(crate) video: Sender<crate::VideoInput>,
    pub(crate) decode: Sender<crate::video::Received>,
    pub(crate) echo: Option<Sender<EchoFrame>>,
    /// Every frame played, with the sink's latency, for the echo canceller's far end.
    pub(crate) render: Sender<crate::send::RenderFrame>,
}

pub(crate) fn run(
    config: CallConfig,
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    links: Links,
    events: Sender<CallEvent>,
) {
    let Links { send: send_commands, video: video_commands, decode, echo, render } = links;
    let mut output_spec = config.output.clone();
    let mut sink = open_sink(&output_spec, &events);
    let mut peers: HashMap<ParticipantId, PeerAudio> = HashMap::new();
    let mut recorders: HashMap<String, WavRecorder> = HashMap::new();
    let mut volumes = Volumes::new();
    let mut mix = vec![0.0f32; TICK_SAMPLES];
    let mut default_checked = Instant::now();
    let mut peer_frame = vec![0.0f32; TICK_SAMPLES];
    loop {
        for command in commands.try_iter() {
            match command {
                Command::Leave => {
                    let _ = send_commands.send(Command::Leave);
                    shared.transport.leave();
                    for recorder in recorders.values_mut() {
                        let _ = recorder.finish();
                    }
                    if let Some(dir) = &config.record_dir {
                        crate::video::write_last_frames(&shared, dir);
                    }
                    let _ = events.send(CallEvent::Left);
                    return;
                }
                Command::SetMuted(muted) => shared.set_muted(muted),
                Command::SetVideoInput(input) => {
                    let _ = video_commands.send(input);
                }
                Command::SetPeerVolume(id, volume) => {
                    volumes.insert(id, volume.clamp(0.0, 2.0));
                }
                Command::SetOutput(spec) => {
                    output_spec = spec;
                    sink = open_sink(&output_spec, &events);
                }
                other @ (Command::SetInput(_) | Command::SetProcessing(_)) => {
                    let _ = send_commands.send(other);
                }
            }
        }
        for event in shared.transport.events().try_iter() {
            handle_transport_event(event, &config, &shared, &events, &decode, &mut peers, &mut recorders);
        }

        let now = Instant::now();
        let heard_at = now + sink.latency();
        mix.fill(0.0);
        let mut stats = lock(&shared.stats);
        for peer in peers.values_mut() {
            let frames_started = fill(peer, now, heard_at, &shared, &mut stats);
            peer_frame.iter_mut().zip(peer.decoded.drain(..TICK_SAMPLES)).for_each(|(slot, s)| *slot = s);
            let volume = volumes.get(&peer.id).copied().unwrap_or(1.0);
            for (out, sample) in mix.iter_mut().zip(&peer_frame) {
                *out += sample * volume;
            }
            let level = (peer_frame.iter().map(|s| s * s).sum::<f32>() / TICK_SAMPLES as f32).sqrt();
            if let Some(peer_stats) = stats.peer_mut(peer.id) {
                peer_stats.level = level;
                let jitter = peer.jitter.stats();
                peer_stats.packets_received = jitter.packets_received;
                peer_stats.packets_lost = jitter.packets_lost;
                peer_stats.packets_late = jitter.packets_late;
                peer_stats.fec_recovered = jitter.fec_recovered;
                peer_stats.jitter_target_ms = jitter.target_delay.as_secs_f32() * 1000.0;
                peer_stats.concealed_ms = jitter.frames_concealed * jitter.frame_duration.as_millis() as u64;
                if frames_started > 0 {
                    peer_stats.jitter_buffer_ms.push(jitter.playout_delay.as_secs_f32() * 1000.0);
                }
            }
            if let Some(recorder) = recorders.get_mut(&peer.name) {
                write_recording(recorder, &peer_frame, &peer.name, heard_at, &shared, &mut stats);
            }
        }
        // Recordings keep their timeline while a peer is away: silence where nothing arrived.
        let present: Vec<&str> = peers.values().map(|peer| peer.name.as_str()).collect();
        for (name, recorder) in recorders.iter_mut().filter(|(name, _)| !present.contains(&name.as_str())) {
            write_recording(recorder, &[0.0; TICK_SAMPLES], name, heard_at, &shared, &mut stats);
        }
        drop(stats);
        for sample in &mut mix {
            *sample = sample.clamp(-1.0, 1.0);
        }
        if let Some(echo) = &echo {
            let _dropped_because_the_send_thread_is_behind = echo.try_send((mix.clone(), heard_at));
        }
        // Only read while a microphone is open; once the channel is full nobody is listening, and
        // the copy of the mix is not made at all.
        if !render.is_full() {
            let _ = render.try_send((mix.clone(), sink.latency()));
        }
        if output_spec == OutputSpec::Device(None) && default_checked.elapsed() >= crate::DEFAULT_DEVICE_CHECK
        {
            default_checked = Instant::now();
            if let Some(default) = chinwag_capture::default_output_name()
                && sink.device_name().is_some_and(|name| name != default)
                && let Ok(new_sink) = open_output(&output_spec)
            {
                sink = new_sink;
                let _ = events.send(CallEvent::DeviceChanged { direction: "output", name: default });
            }
        }
        if let Err(error) = sink.write_frame(&mix) {
            warn!(%error, "audio output failed");
            (output_spec, sink) = recover_output(output_spec, &error.to_string(), &events);
        }
    }
}

/// After an output failure: the same device again (ALSA through PulseAudio sometimes reports
/// a transient I/O error that a fresh stream does not have), then the default speaker, then
/// no sound output; the call goes on in every case.
fn recover_output(
    spec: OutputSpec,
    error: &str,
    events: &Sender<CallEvent>,
) -> (OutputSpec, Box<dyn AudioSink>) {
    let mut candidates = vec![spec.clone()];
    if let OutputSpec::Device(Some(name)) = &spec
        && name != "default"
    {
        candidates.push(OutputSpec::Device(None));
    }
    for candidate in candidates {
        if let Ok(sink) = open_output(&candidate) {
            let fallback =
                if candidate == spec { "the same speaker, reopened" } else { "the default speaker" };
            let _ =
                events.send(CallEvent::DeviceProblem { error: error.to_owned(), fallback: fallback.into() });
            return (candidate, sink);
        }
    }
    let _ =
        events.send(CallEvent::DeviceProblem { error: error.to_owned(), fallback: "no sound output".into() });
    (OutputSpec::None, Box::new(ClockSink::new(Duration::ZERO)))
}

fn open_sink(spec: &OutputSpec, events: &Sender<CallEvent>) -> Box<dyn AudioSink> {
    match open_output(spec) {
        Ok(sink) => sink,
        Err(error) => {
            let _ = events.send(CallEvent::DeviceProblem {
                error: error.to_string(),
                fallback: "no sound output".into(),
            });
            Box::new(ClockSink::new(Duration::ZERO))
        }
    }
}

fn write_recording(
    recorder: &mut WavRecorder,
    samples: &[f32],
    name: &str,
    heard_at: Instant,
    shared: &Shared,
    stats: &mut crate::CallStats,
) {
    if recorder.samples() == 0 {
        let start = shared.clock.unix_us(heard_at);
        for peer in stats.peers.iter_mut().filter(|peer| peer.name == name) {
            peer.record_start_unix_us.get_or_insert(start);
        }
    }
    if let Err(error) = recorder.write(samples) {
        warn!(%error, "recording failed");
    }
}

/// Decodes until the peer has a tick's worth of samples; returns how many frames it decoded.
fn fill(
    peer: &mut PeerAudio,
    now: Instant,
    heard_at: Instant,
    shared: &Shared,
    stats: &mut crate::CallStats,
) -> usize {
    let mut frames = 0;
    while peer.decoded.len() < TICK_SAMPLES {
        frames += 1;
        let samples_before = peer.decoded.len();
        let frame_samples = (peer.jitter.frame_duration().as_micros() as usize * 48 / 1000).max(120);
        let decoded: Result<&[f32], _> = match peer.jitter.poll_playout(now) {
            Playout::Frame { timestamp, payload, .. } => {
                if let Some(index) = peer.captures.iter().position(|(ts, _)| *ts == timestamp.0) {
                    let (_, captured) = peer.captures[index];
                    // This frame's first sample is heard after what is already decoded.
                    let ahead = Duration::from_secs_f64(samples_before as f64 / 48_000.0);
                    let played = heard_at + ahead;
                    if let Some(relay_now) = shared.transport.relay_time(played) {
                        let delay = relay_now.saturating_since(captured) + CODEC_DELAY;
                        if let Some(peer_stats) = stats.peer_mut(peer.id) {
                            peer_stats.mouth_to_ear_ms.push(delay.as_secs_f32() * 1000.0);
                        }
                    }
                }
                peer.decoder.decode(&payload)
            }
            Playout::RecoverWithFec { next_payload, .. } => {
                peer.decoder.decode_fec(&next_payload, frame_samples)
            }
            Playout::Conceal { .. } => peer.decoder.conceal(frame_samples),
            Playout::Silence => {
                // Nothing to play yet (or any more): fill only 2.5 ms, so that the buffer is
                // asked again soon and its first frame starts within 2.5 ms of being due,
                // rather than up to a whole frame later.
                peer.decoded.extend(std::iter::repeat_n(0.0, SILENCE_STEP_SAMPLES));
                continue;
            }
        };
        match decoded {
            Ok(samples) => peer.decoded.extend(samples),
            // A bad packet from a peer costs that frame, never the call.
            Err(_) => peer.decoded.extend(std::iter::repeat_n(0.0, frame_samples)),
        }
    }
    frames
}

fn handle_transport_event(
    event: TransportEvent,
    config: &CallConfig,
    shared: &Arc<Shared>,
    events: &Sender<CallEvent>,
    decode: &Sender<crate::video::Received>,
    peers: &mut HashMap<ParticipantId, PeerAudio>,
    recorders: &mut HashMap<String, WavRecorder>,
) {
    let add_peer = |peer: &Peer,
                    peers: &mut HashMap<ParticipantId, PeerAudio>,
                    recorders: &mut HashMap<String, WavRecorder>| {
        let jitter = match JitterBuffer::new(config.jitter.clone()) {
            Ok(jitter) => jitter,
            Err(error) => {
                warn!(%error, "invalid jitter configuration; using the default");
                JitterBuffer::new(Default::default()).expect("the default configuration is valid")
            }
        };
        peers.insert(
            peer.id,
            PeerAudio {
                id: peer.id,
                name: peer.name.clone(),
                jitter,
                decoder: VoiceDecoder::new(),
                decoded: VecDeque::new(),
                captures: VecDeque::new(),
            },
        );
        if let Some(dir) = &config.record_dir
            && !recorders.contains_key(&peer.name)
        {
            let path = dir.join(format!("{}.wav", file_name(&peer.name)));
            match WavRecorder::create(&path) {
                Ok(recorder) => {
                    recorders.insert(peer.name.clone(), recorder);
                }
                Err(error) => warn!(%error, "cannot record"),
            }
        }
        let mut stats = lock(&shared.stats);
        // One recording per name: a peer who rejoins (with a new id) goes on in the same file.
        let record_start_unix_us = stats
            .peers
            .iter()
            .find(|earlier| earlier.name == peer.name)
            .and_then(|earlier| earlier.record_start_unix_us);
        stats.peers.push(PeerStats {
            id: peer.id,
            name: peer.name.clone(),
            present: true,
            muted: peer.muted,
            camera: peer.camera,
            record_start_unix_us,
            ..PeerStats::default()
        });
    };
    match event {
        TransportEvent::Joined { id, room, peers: list, rejoined } => {
            if rejoined {
                // Everyone rejoined with new ids: the old ones are gone.
                let mut stats = lock(&shared.stats);
                for old in peers.keys() {
                    if let Some(peer) = stats.peer_mut(*old) {
                        peer.present = false;
                    }
                }
                drop(stats);
                peers.clear();
            }
            for peer in &list {
                add_peer(peer, peers, recorders);
            }
            let mut stats = lock(&shared.stats);
            stats.id = Some(id);
            stats.room = Some(room.clone());
            stats.connected = true;
            drop(stats);
            let _ = events.send(CallEvent::Joined { id, room, peers: list, rejoined });
        }
        TransportEvent::PeerJoined(peer) => {
            add_peer(&peer, peers, recorders);
            let _ = events.send(CallEvent::PeerJoined(peer));
        }
        TransportEvent::PeerLeft(id) => {
            peers.remove(&id);
            if let Some(peer) = lock(&shared.stats).peer_mut(id) {
                peer.present = false;
            }
            let _ = events.send(CallEvent::PeerLeft(id));
        }
        TransportEvent::PeerState(state) => {
            if let Some(peer) = lock(&shared.stats).peer_mut(state.id) {
                peer.muted = state.muted;
                peer.camera = state.camera;
            }
            let _ =
                events.send(CallEvent::PeerState { id: state.id, muted: state.muted, camera: state.camera });
        }
        TransportEvent::Media { header, payload, arrived } => {
            let Some(peer) = peers.get_mut(&header.sender) else { return };
            if header.kind == MediaKind::Video {
                let frame = crate::video::Received {
                    sender: header.sender,
                    name: peer.name.clone(),
                    capture_time: header.capture_time,
                    payload,
                };
                let _dropped_because_the_decoder_is_behind = decode.try_send(frame);
                return;
            }
            if peer.captures.len() == CAPTURES_KEPT {
                peer.captures.pop_front();
            }
            peer.captures.push_back((header.timestamp.0, header.capture_time));
            let restart = header.flags.contains(chinwag_proto::MediaFlags::RESTART);
            peer.jitter.handle_packet(arrived, header.seq, header.timestamp, restart, payload.to_vec());
        }
        TransportEvent::Rtt(rtt) => lock(&shared.stats).rtt_ms.push(rtt.as_secs_f32() * 1000.0),
        TransportEvent::Disconnected { error, retry_in } => {
            lock(&shared.stats).connected = false;
            let _ = events.send(CallEvent::Reconnecting { reason: error.to_string(), retry_in });
        }
        TransportEvent::Failed(error) => {
            lock(&shared.stats).connected = false;
            let _ = events.send(CallEvent::Failed(error));
        }
        TransportEvent::Left => {}
    }
}
