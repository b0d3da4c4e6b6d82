//! What a call measured: per peer and for the call as a whole.

use std::collections::VecDeque;

use chinwag_proto::ParticipantId;

/// How many recent samples a distribution keeps (five minutes at one a frame of 20 ms...
/// or at one a second for RTT).
const SAMPLES_KEPT: usize = 15_000;

/// Recent values of one measurement, for percentiles.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: VecDeque<f32>,
}

/// The 50th and 95th percentiles of some samples, and how many there were.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub count: usize,
}

impl Samples {
    pub fn push(&mut self, value: f32) {
        if self.values.len() == SAMPLES_KEPT {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    pub fn percentiles(&self) -> Percentiles {
        if self.values.is_empty() {
            return Percentiles::default();
        }
        let mut sorted: Vec<f32> = self.values.iter().copied().collect();
        sorted.sort_by(f32::total_cmp);
        let at = |p: f64| f64::from(sorted[((sorted.len() - 1) as f64 * p).round() as usize]);
        Percentiles { p50: at(0.5), p95: at(0.95), count: sorted.len() }
    }

    pub fn last(&self) -> Option<f32> {
        self.values.back().copied()
    }
}

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
    pub rtt_ms: Samples,
    /// Everyone heard in this call, including those who left.
    pub peers: Vec<PeerStats>,
}

impl CallStats {
    pub fn peer_mut(&mut self, id: ParticipantId) -> Option<&mut PeerStats> {
        self.peers.iter_mut().find(|peer| peer.id == id)
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
    pub concealed_ms: u64,
    pub fec_recovered: u64,
    /// Wall-clock time (µs since the Unix epoch) at which the first sample of this peer's
    /// recording was played.
    pub record_start_unix_us: Option<u64>,
    /// What the jitter buffer added to the delay, per played frame, in milliseconds.
    pub jitter_buffer_ms: Samples,
    /// The delay the jitter buffer aims for now, in milliseconds.
    pub jitter_target_ms: f32,
    /// From capture at the sender to playout here, per played frame, in milliseconds.
    pub mouth_to_ear_ms: Samples,
    /// The level of the last 10 ms played from this peer (RMS, 0 to 1), for a speaking
    /// indicator.
    pub level: f32,
    pub video_frames_received: u64,
    pub video_bytes_received: u64,
    /// Frames that did not decode (bogus, truncated or oversized), dropped.
    pub video_decode_errors: u64,
    pub video_width: u32,
    pub video_height: u32,
    pub video_first_at: Option<std::time::Instant>,
    pub video_last_at: Option<std::time::Instant>,
    /// From capture at the sender to the decoded frame being ready here, in milliseconds.
    pub glass_to_glass_ms: Samples,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_ramp() {
        let mut samples = Samples::default();
        assert_eq!(samples.percentiles(), Percentiles::default());
        for value in 1..=100 {
            samples.push(value as f32);
        }
        let p = samples.percentiles();
        assert_eq!((p.p50.round(), p.p95, p.count), (51.0, 95.0, 100));
        assert_eq!(samples.last(), Some(100.0));
    }
}
