//! What a call measured, published by the threads that measure it and read without taking
//! any lock those threads hold: the playout thread and the video decoder each publish a
//! snapshot every so often (`arc-swap`), and the send threads keep plain atomics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use arc_swap::ArcSwap;
use chinwag_call::{PeerAudioStats, Sketch};
use chinwag_capture::DeviceTrouble;
use chinwag_proto::ParticipantId;

/// The call as a whole.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    pub id: Option<ParticipantId>,
    pub room: Option<String>,
    pub connected: bool,
    /// Wall-clock time (µs since the Unix epoch) the first sent sample was captured.
    pub audio_send_start_unix_us: Option<u64>,
    pub audio_frames_sent: u64,
    /// Whether the local microphone hears voice now (after echo cancellation), unmuted.
    pub speaking: bool,
    /// The level of the last frame read from the input (RMS, 0 to 1), muted or not: for an
    /// input level meter.
    pub input_level: f32,
    pub video_frames_sent: u64,
    pub video_bytes_sent: u64,
    /// Round-trip times to the relay, in milliseconds.
    pub rtt_ms: Sketch,
    /// What the connection dropped, by reason.
    pub transport: chinwag_transport::TransportStats,
    /// What the microphone and the speaker recovered from by themselves.
    pub input_trouble: DeviceTrouble,
    pub output_trouble: DeviceTrouble,
    /// Everyone heard in this call, including those who left.
    pub peers: Vec<PeerStats>,
}

impl CallStats {
    pub fn peer_mut(&mut self, id: ParticipantId) -> Option<&mut PeerStats> {
        self.peers.iter_mut().find(|peer| peer.id == id)
    }

    pub fn peer(&self, id: ParticipantId) -> Option<&PeerStats> {
        self.peers.iter().find(|peer| peer.id == id)
    }
}

/// One remote participant's audio and video, as played out here.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    pub id: ParticipantId,
    pub name: String,
    /// Still in the room.
    pub present: bool,
    pub muted: bool,
    pub camera: bool,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub packets_late: u64,
    /// Frames dropped unplayed to bring the delay back down.
    pub frames_dropped: u64,
    /// Audio taken out by time compression to bring the delay back down, in milliseconds.
    pub accelerated_ms: u64,
    pub concealed_ms: u64,
    pub fec_recovered: u64,
    pub audio_decode_errors: u64,
    /// Wall-clock time (µs since the Unix epoch) at which the first sample of this peer's
    /// recording was played.
    pub record_start_unix_us: Option<u64>,
    /// What the jitter buffer added to the delay, per played frame, in milliseconds.
    pub jitter_buffer_ms: Sketch,
    /// The delay the jitter buffer aims for now, in milliseconds.
    pub jitter_target_ms: f32,
    /// From capture at the sender to playout here, per played frame, in milliseconds.
    pub mouth_to_ear_ms: Sketch,
    /// The level of the last 10 ms played from this peer (RMS, 0 to 1), for a speaking
    /// indicator.
    pub level: f32,
    pub video_frames_received: u64,
    pub video_bytes_received: u64,
    /// Frames that did not decode (bogus, truncated or oversized), dropped.
    pub video_decode_errors: u64,
    pub video_width: u32,
    pub video_height: u32,
    pub video_first_at: Option<Instant>,
    pub video_last_at: Option<Instant>,
    /// From capture at the sender to the decoded frame being ready here, in milliseconds.
    pub glass_to_glass_ms: Sketch,
}

impl PeerStats {
    /// Frames per second decoded from this peer, over the time video has been arriving.
    pub fn video_fps(&self) -> f64 {
        match (self.video_first_at, self.video_last_at) {
            (Some(first), Some(last)) if last > first && self.video_frames_received > 1 => {
                (self.video_frames_received - 1) as f64 / (last - first).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// The playout thread's part: the room and everyone's audio.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlayPart {
    pub(crate) id: Option<ParticipantId>,
    pub(crate) room: Option<String>,
    pub(crate) connected: bool,
    pub(crate) rtt_ms: Sketch,
    pub(crate) output_trouble: DeviceTrouble,
    pub(crate) peers: Vec<PeerAudioPart>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PeerAudioPart {
    pub(crate) id: ParticipantId,
    pub(crate) name: String,
    pub(crate) present: bool,
    pub(crate) muted: bool,
    pub(crate) camera: bool,
    pub(crate) record_start_unix_us: Option<u64>,
    pub(crate) audio: PeerAudioStats,
}

/// The video decoder's part: every peer's video.
#[derive(Debug, Clone, Default)]
pub(crate) struct VideoPart {
    pub(crate) peers: BTreeMap<ParticipantId, PeerVideoStats>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PeerVideoStats {
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
    pub(crate) decode_errors: u64,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) first_at: Option<Instant>,
    pub(crate) last_at: Option<Instant>,
    pub(crate) glass_to_glass: Sketch,
}

/// Where every thread's figures meet.
#[derive(Default)]
pub(crate) struct Board {
    pub(crate) play: ArcSwap<PlayPart>,
    pub(crate) video: ArcSwap<VideoPart>,
    pub(crate) audio_send_start_unix_us: AtomicU64,
    pub(crate) audio_frames_sent: AtomicU64,
    pub(crate) speaking: AtomicBool,
    /// An `f32`'s bits.
    pub(crate) input_level: AtomicU32,
    pub(crate) video_frames_sent: AtomicU64,
    pub(crate) video_bytes_sent: AtomicU64,
    pub(crate) input_trouble: ArcSwap<DeviceTrouble>,
}

impl Board {
    /// Everything, as of the last publications.
    pub(crate) fn snapshot(&self, transport: chinwag_transport::TransportStats) -> CallStats {
        let play = self.play.load();
        let video = self.video.load();
        let peers = play
            .peers
            .iter()
            .map(|peer| {
                let audio = &peer.audio;
                let mut stats = PeerStats {
                    id: peer.id,
                    name: peer.name.clone(),
                    present: peer.present,
                    muted: peer.muted,
                    camera: peer.camera,
                    packets_received: audio.packets_received,
                    packets_lost: audio.packets_lost,
                    packets_late: audio.packets_late,
                    frames_dropped: audio.frames_dropped,
                    accelerated_ms: audio.accelerated_ms,
                    concealed_ms: audio.concealed_ms,
                    fec_recovered: audio.fec_recovered,
                    audio_decode_errors: audio.decode_errors,
                    record_start_unix_us: peer.record_start_unix_us,
                    jitter_buffer_ms: audio.jitter_buffer.clone(),
                    jitter_target_ms: audio.jitter_target.as_secs_f32() * 1000.0,
                    mouth_to_ear_ms: audio.mouth_to_ear.clone(),
                    level: audio.level,
                    ..PeerStats::default()
                };
                if let Some(video) = video.peers.get(&peer.id) {
                    stats.video_frames_received = video.frames;
                    stats.video_bytes_received = video.bytes;
                    stats.video_decode_errors = video.decode_errors;
                    (stats.video_width, stats.video_height) = (video.width, video.height);
                    stats.video_first_at = video.first_at;
                    stats.video_last_at = video.last_at;
                    stats.glass_to_glass_ms = video.glass_to_glass.clone();
                }
                stats
            })
            .collect();
        let started = self.audio_send_start_unix_us.load(Relaxed);
        CallStats {
            id: play.id,
            room: play.room.clone(),
            connected: play.connected,
            audio_send_start_unix_us: (started != 0).then_some(started),
            audio_frames_sent: self.audio_frames_sent.load(Relaxed),
            speaking: self.speaking.load(Relaxed),
            input_level: f32::from_bits(self.input_level.load(Relaxed)),
            video_frames_sent: self.video_frames_sent.load(Relaxed),
            video_bytes_sent: self.video_bytes_sent.load(Relaxed),
            rtt_ms: play.rtt_ms.clone(),
            transport,
            input_trouble: **self.input_trouble.load(),
            output_trouble: play.output_trouble,
            peers,
        }
    }

    pub(crate) fn publish_play(&self, part: &PlayPart) {
        self.play.store(Arc::new(part.clone()));
    }

    pub(crate) fn publish_video(&self, part: &VideoPart) {
        self.video.store(Arc::new(part.clone()));
    }

    /// The last mouth-to-ear delay measured for `peer`, for lip sync.
    pub(crate) fn mouth_to_ear(&self, peer: ParticipantId) -> Option<std::time::Duration> {
        self.play.load().peers.iter().find(|p| p.id == peer && p.present)?.audio.mouth_to_ear.last()
    }

    /// A peer's name, by id.
    pub(crate) fn name(&self, peer: ParticipantId) -> Option<String> {
        self.play.load().peers.iter().rev().find(|p| p.id == peer).map(|p| p.name.clone())
    }
}
