//! The receiving half of a call's audio: every peer's packets through its own jitter buffer
//! and decoder, mixed with per-peer volume into one 10 ms frame at a time.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use chinwag_codec::{CODEC_DELAY, VoiceDecoder};
use chinwag_jitter::{JitterBuffer, JitterConfig, JitterError, PacketFlags, Playout as Decision};
use chinwag_proto::{MediaFlags, MediaHeader, MediaKind, ParticipantId, RelayTime};

use crate::mix::Limiter;
use crate::sketch::Sketch;
use crate::stretch;

/// The mixer's period: 10 ms at 48 kHz.
pub const TICK_SAMPLES: usize = 480;
/// The highest per-peer gain.
pub const MAX_VOLUME: f32 = 2.0;
/// How much silence one [`Decision::Silence`] stands for: 2.5 ms, the finest Opus step, so
/// that a peer's first frame starts within 2.5 ms of being due.
const SILENCE_STEP_SAMPLES: usize = 120;
/// Capture times remembered per peer, to pair with frames as they are played.
const CAPTURES_KEPT: usize = 256;
/// An Opus packet this small carries no speech (DTX or comfort noise): the jitter buffer may
/// drop it whole when it holds too much.
const SILENT_PACKET_BYTES: usize = 3;

/// One remote participant's audio as played here.
#[derive(Debug, Clone, Default)]
pub struct PeerAudioStats {
    pub packets_received: u64,
    pub packets_lost: u64,
    pub packets_late: u64,
    /// Frames dropped unplayed to bring the delay down after a stall or burst.
    pub frames_dropped: u64,
    /// Frames played time-compressed to bring the delay down, and the audio that took out.
    pub frames_accelerated: u64,
    pub accelerated_ms: u64,
    pub concealed_ms: u64,
    pub fec_recovered: u64,
    /// Packets that would not decode, played as silence.
    pub decode_errors: u64,
    /// The delay the jitter buffer aims for now.
    pub jitter_target: Duration,
    /// What the jitter buffer added, per played frame.
    pub jitter_buffer: Sketch,
    /// From capture at the sender to the ear here, per played frame.
    pub mouth_to_ear: Sketch,
    /// The level of the last 10 ms played (RMS, 0 to 1).
    pub level: f32,
}

struct PeerAudio {
    name: String,
    jitter: JitterBuffer,
    decoder: VoiceDecoder,
    /// Decoded samples not yet mixed.
    decoded: VecDeque<f32>,
    /// (media timestamp, capture time) of recently arrived frames.
    captures: VecDeque<(u32, RelayTime)>,
    /// What this peer contributed to the last tick, before its volume.
    tick: Vec<f32>,
    /// A frame after time compression.
    stretched: Vec<f32>,
    /// Samples taken out by time compression.
    removed_samples: u64,
    volume: f32,
    stats: PeerAudioStats,
}

/// Every peer's audio, mixed. Packets and `now` in; 10 ms of mix out per
/// [`Playout::poll_mix`].
pub struct Playout {
    jitter_config: JitterConfig,
    peers: BTreeMap<ParticipantId, PeerAudio>,
    limiter: Limiter,
}

impl Playout {
    pub fn new(jitter_config: JitterConfig) -> Result<Self, JitterError> {
        jitter_config.validate()?;
        Ok(Self { jitter_config, peers: BTreeMap::new(), limiter: Limiter::default() })
    }

    pub fn handle_peer_joined(&mut self, id: ParticipantId, name: &str) {
        let jitter = JitterBuffer::new(self.jitter_config.clone()).expect("validated in Playout::new");
        self.peers.insert(
            id,
            PeerAudio {
                name: name.to_owned(),
                jitter,
                decoder: VoiceDecoder::new(),
                decoded: VecDeque::with_capacity(4 * TICK_SAMPLES),
                captures: VecDeque::with_capacity(CAPTURES_KEPT),
                tick: vec![0.0; TICK_SAMPLES],
                stretched: Vec::with_capacity(2 * TICK_SAMPLES),
                removed_samples: 0,
                volume: 1.0,
                stats: PeerAudioStats::default(),
            },
        );
    }

    pub fn handle_peer_left(&mut self, id: ParticipantId) {
        self.peers.remove(&id);
    }

    /// After a reconnection every peer has a new id: the old ones are gone.
    pub fn handle_rejoined(&mut self) {
        self.peers.clear();
    }

    /// A packet from a peer, with the local instant it arrived. Anything but audio from a
    /// known peer is ignored.
    pub fn handle_audio(&mut self, arrived: Instant, header: &MediaHeader, payload: &[u8]) {
        if header.kind != MediaKind::Audio {
            return;
        }
        let Some(peer) = self.peers.get_mut(&header.sender) else { return };
        if peer.captures.len() == CAPTURES_KEPT {
            peer.captures.pop_front();
        }
        peer.captures.push_back((header.timestamp.0, header.capture_time));
        let flags = PacketFlags {
            restart: header.flags.contains(MediaFlags::RESTART),
            silent: payload.len() <= SILENT_PACKET_BYTES,
        };
        peer.jitter.handle_packet(arrived, header.seq, header.timestamp, flags, payload.to_vec());
        // Counted at once, so that the stats taken when the peer leaves include its last packet.
        peer.refresh_stats();
    }

    /// A gain for one peer, 0 (silent) to [`MAX_VOLUME`].
    pub fn set_volume(&mut self, id: ParticipantId, volume: f32) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.volume = if volume.is_finite() { volume.clamp(0.0, MAX_VOLUME) } else { 1.0 };
        }
    }

    /// Mixes the next 10 ms into `mix` (which must hold [`TICK_SAMPLES`]). `now` is when the
    /// tick is computed; `heard_at` is when its first sample reaches the ear, on the relay
    /// clock (`None` while the clock is unknown: then mouth-to-ear is not measured).
    pub fn poll_mix(&mut self, now: Instant, heard_at: Option<RelayTime>, mix: &mut [f32]) {
        assert_eq!(mix.len(), TICK_SAMPLES, "the mixer works in 10 ms ticks");
        mix.fill(0.0);
        for peer in self.peers.values_mut() {
            peer.fill(now, heard_at);
            for (slot, sample) in peer.tick.iter_mut().zip(peer.decoded.drain(..TICK_SAMPLES)) {
                *slot = sample;
            }
            for (out, sample) in mix.iter_mut().zip(&peer.tick) {
                *out += sample * peer.volume;
            }
            peer.stats.level = rms(&peer.tick);
            peer.refresh_stats();
        }
        self.limiter.process(mix);
    }

    /// Each peer's part of the last tick, before its volume: for recordings.
    pub fn last_tick(&self) -> impl Iterator<Item = (ParticipantId, &str, &[f32])> {
        self.peers.iter().map(|(id, peer)| (*id, peer.name.as_str(), peer.tick.as_slice()))
    }

    pub fn peer_stats(&self, id: ParticipantId) -> Option<&PeerAudioStats> {
        self.peers.get(&id).map(|peer| &peer.stats)
    }

    pub fn peer_ids(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.peers.keys().copied()
    }

    /// Samples the limiter had to turn down so far.
    pub fn limited_samples(&self) -> u64 {
        self.limiter.limited_samples()
    }
}

impl PeerAudio {
    fn refresh_stats(&mut self) {
        let jitter = self.jitter.stats();
        let stats = &mut self.stats;
        stats.packets_received = jitter.packets_received;
        stats.packets_lost = jitter.packets_lost;
        stats.packets_late = jitter.packets_late;
        stats.frames_dropped = jitter.frames_dropped;
        stats.frames_accelerated = jitter.frames_accelerated;
        stats.accelerated_ms = self.removed_samples / 48;
        stats.fec_recovered = jitter.fec_recovered;
        stats.jitter_target = jitter.target_delay;
        stats.concealed_ms = jitter.frames_concealed * jitter.frame_duration.as_millis() as u64;
    }

    /// Decodes until a tick's worth of samples is ready.
    fn fill(&mut self, now: Instant, heard_at: Option<RelayTime>) {
        while self.decoded.len() < TICK_SAMPLES {
            let samples_before = self.decoded.len();
            let frame_samples = (self.jitter.frame_duration().as_micros() as usize * 48 / 1000).max(120);
            let mut accelerate = false;
            let decoded = match self.jitter.poll_playout(now) {
                Decision::Frame { timestamp, payload, accelerate: compress, .. } => {
                    accelerate = compress;
                    let playout_delay = self.jitter.stats().playout_delay;
                    self.stats.jitter_buffer.record(playout_delay);
                    if let Some(index) = self.captures.iter().position(|(ts, _)| *ts == timestamp.0)
                        && let Some(heard_at) = heard_at
                    {
                        let (_, captured) = self.captures[index];
                        // This frame's first sample is heard after what is already decoded.
                        let ahead = (samples_before as u64) * 1_000_000 / 48_000;
                        let heard = RelayTime::from_micros(heard_at.as_micros() + ahead);
                        self.stats.mouth_to_ear.record(heard.saturating_since(captured) + CODEC_DELAY);
                    }
                    self.decoder.decode(&payload)
                }
                Decision::RecoverWithFec { next_payload, .. } => {
                    self.decoder.decode_fec(&next_payload, frame_samples)
                }
                Decision::Conceal { .. } => self.decoder.conceal(frame_samples),
                Decision::Silence => {
                    self.decoded.extend(std::iter::repeat_n(0.0, SILENCE_STEP_SAMPLES));
                    continue;
                }
            };
            match decoded {
                Ok(samples) if accelerate => {
                    // The buffer holds more than it needs: play this frame shorter, and the
                    // next poll comes that much sooner.
                    self.removed_samples += stretch::accelerate(samples, &mut self.stretched) as u64;
                    self.decoded.extend(self.stretched.iter().copied());
                }
                Ok(samples) => self.decoded.extend(samples),
                // A bad packet from a peer costs that frame, never the call.
                Err(_) => {
                    self.stats.decode_errors += 1;
                    self.decoded.extend(std::iter::repeat_n(0.0, frame_samples));
                }
            }
        }
    }
}

/// The RMS level of `samples`, 0 to 1.
pub(crate) fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use chinwag_codec::{VoiceConfig, VoiceEncoder};
    use chinwag_proto::{MediaTimestamp, SeqNo};

    use super::*;
    use crate::stamp::MediaStamper;

    const MS: Duration = Duration::from_millis(1);

    fn tone(hz: f32, amplitude: f32, n: usize, offset: usize) -> Vec<f32> {
        (offset..offset + n)
            .map(|i| amplitude * (i as f32 * hz * std::f32::consts::TAU / 48_000.0).sin())
            .collect()
    }

    /// Sends `seconds` of a tone from `peer` through a perfect network with `latency`, polling
    /// every 10 ms; returns the mixes.
    fn play_tones(peers: &[(u32, f32, f32)], volume: f32, seconds: usize) -> (Playout, Vec<f32>) {
        let start = Instant::now();
        let mut playout = Playout::new(JitterConfig::default()).unwrap();
        let mut senders: Vec<_> = peers
            .iter()
            .map(|&(id, hz, amplitude)| {
                playout.handle_peer_joined(ParticipantId(id), &format!("p{id}"));
                playout.set_volume(ParticipantId(id), volume);
                let encoder = VoiceEncoder::new(VoiceConfig::default()).unwrap();
                (ParticipantId(id), hz, amplitude, encoder, MediaStamper::new(MediaKind::Audio))
            })
            .collect();
        let mut out = Vec::new();
        let mut mix = vec![0.0; TICK_SAMPLES];
        let mut packet = Vec::new();
        for tick in 0..seconds * 100 {
            let now = start + tick as u32 * 10 * MS;
            if tick % 2 == 0 {
                for (id, hz, amplitude, encoder, stamper) in &mut senders {
                    let sent = tick * 480;
                    encoder.encode(&tone(*hz, *amplitude, 960, sent), &mut packet).unwrap();
                    let mut header = stamper.stamp(sent as u64, RelayTime::from_micros(tick as u64 * 10_000));
                    header.sender = *id;
                    playout.handle_audio(now + 30 * MS, &header, &packet);
                }
            }
            // The tick's first sample is heard 20 ms after it is computed.
            let heard = RelayTime::from_micros(tick as u64 * 10_000 + 20_000);
            playout.poll_mix(now + 30 * MS, Some(heard), &mut mix);
            out.extend_from_slice(&mix);
        }
        (playout, out)
    }

    fn amplitude_at(samples: &[f32], hz: f32) -> f32 {
        let (mut re, mut im) = (0.0f64, 0.0f64);
        for (n, s) in samples.iter().enumerate() {
            let phase = n as f64 * f64::from(hz) * std::f64::consts::TAU / 48_000.0;
            re += f64::from(*s) * phase.cos();
            im += f64::from(*s) * phase.sin();
        }
        (2.0 * (re * re + im * im).sqrt() / samples.len() as f64) as f32
    }

    #[test]
    fn two_peers_are_mixed_at_their_volumes() {
        let (playout, mix) = play_tones(&[(1, 440.0, 0.2), (2, 660.0, 0.1)], 1.0, 2);
        let steady = &mix[48_000..96_000];
        assert!((amplitude_at(steady, 440.0) - 0.2).abs() < 0.03, "{}", amplitude_at(steady, 440.0));
        assert!((amplitude_at(steady, 660.0) - 0.1).abs() < 0.03, "{}", amplitude_at(steady, 660.0));
        assert_eq!(playout.limited_samples(), 0, "quiet peers are not limited");
        let names: Vec<_> = playout.last_tick().map(|(_, name, _)| name.to_owned()).collect();
        assert_eq!(names, ["p1", "p2"]);
    }

    #[test]
    fn a_loud_peer_at_double_volume_is_limited_not_clipped() {
        let (playout, mix) = play_tones(&[(1, 440.0, 0.8)], MAX_VOLUME, 2);
        let peak = mix.iter().fold(0.0f32, |peak, s| peak.max(s.abs()));
        assert!(peak < 1.0 && peak > 0.8, "peak {peak}");
        assert!(playout.limited_samples() > 0);
        let flat = mix.windows(3).filter(|w| w[0] == w[1] && w[1] == w[2] && w[0].abs() > 0.5).count();
        assert_eq!(flat, 0, "no flat tops");
    }

    #[test]
    fn mouth_to_ear_is_capture_to_ear_plus_the_codec() {
        // Captured at tick * 10 ms, heard at (tick + 2) * 10 ms plus what the jitter buffer
        // holds: the report must be exactly that, measured from the buffer's own delay.
        let (playout, _) = play_tones(&[(1, 440.0, 0.2)], 1.0, 3);
        let stats = playout.peer_stats(ParticipantId(1)).unwrap();
        let m2e = stats.mouth_to_ear.percentiles();
        let buffer = stats.jitter_buffer.percentiles();
        assert!(m2e.count > 100);
        let expected = 20.0 + buffer.p50 + CODEC_DELAY.as_secs_f64() * 1000.0;
        assert!((m2e.p50 - expected).abs() <= 2.0, "mouth-to-ear {m2e:?}, buffer {buffer:?}");
    }

    #[test]
    fn garbage_from_a_peer_costs_frames_not_the_call() {
        let start = Instant::now();
        let mut playout = Playout::new(JitterConfig::default()).unwrap();
        playout.handle_peer_joined(ParticipantId(4), "noisy");
        let mut mix = vec![0.0; TICK_SAMPLES];
        for tick in 0..100u32 {
            let now = start + tick * 10 * MS;
            if tick % 2 == 0 {
                let header = MediaHeader {
                    kind: MediaKind::Audio,
                    flags: MediaFlags::default(),
                    sender: ParticipantId(4),
                    seq: SeqNo(tick / 2),
                    timestamp: MediaTimestamp(tick / 2 * 960),
                    capture_time: RelayTime::from_micros(0),
                };
                playout.handle_audio(now, &header, &[0xff; 7]);
            }
            playout.poll_mix(now, None, &mut mix);
            assert!(mix.iter().all(|s| s.is_finite()));
        }
        let stats = playout.peer_stats(ParticipantId(4)).unwrap();
        assert!(stats.decode_errors > 10, "{stats:?}");
        // Unknown senders and video are ignored.
        let video = MediaHeader {
            kind: MediaKind::Video,
            flags: MediaFlags::default(),
            sender: ParticipantId(4),
            seq: SeqNo(0),
            timestamp: MediaTimestamp(0),
            capture_time: RelayTime::from_micros(0),
        };
        playout.handle_audio(start, &video, &[1, 2, 3]);
        playout.handle_audio(start, &MediaHeader { sender: ParticipantId(9), ..video }, &[1]);
        playout.handle_rejoined();
        assert_eq!(playout.peer_ids().count(), 0);
    }
}
