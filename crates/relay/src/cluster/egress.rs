//! The queue of frames this relay publishes to the cluster, as a sans-IO core.
//!
//! The same rules as a receiver's queue ([`crate::queue`]), adapted to a link that must never
//! be disconnected: audio in order; video at most one frame per sender and room, the newest;
//! and when the link cannot keep up, audio that waited too long or does not fit is dropped,
//! oldest first, rather than growing the queue. Audio and video are taken out separately, each
//! by its own publisher on its own NATS connection, so neither waits behind the other.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chinwag_proto::{MediaKind, ParticipantId};

#[derive(Debug, Clone, Copy)]
pub struct EgressLimits {
    pub audio_bytes: usize,
    pub video_bytes: usize,
    /// Audio older than this is worth nothing to a listener and is dropped.
    pub max_delay: Duration,
}

/// A frame to publish on `subject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<S> {
    pub subject: S,
    pub kind: MediaKind,
    pub frame: Bytes,
}

/// How many frames a push dropped, and of which kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub audio: u64,
    pub video: u64,
    /// Video frames replaced by a newer one from the same sender.
    pub superseded: u64,
}

/// Frames waiting to be published, each with its subject `S`.
#[derive(Debug)]
pub struct Egress<S> {
    limits: EgressLimits,
    audio: VecDeque<(Instant, S, Bytes)>,
    video: VecDeque<(S, ParticipantId, Bytes)>,
    audio_bytes: usize,
    video_bytes: usize,
}

impl<S: PartialEq> Egress<S> {
    pub fn new(limits: EgressLimits) -> Self {
        Self { limits, audio: VecDeque::new(), video: VecDeque::new(), audio_bytes: 0, video_bytes: 0 }
    }

    pub fn push_audio(&mut self, now: Instant, subject: S, frame: Bytes) -> Dropped {
        let mut dropped = Dropped::default();
        if frame.len() > self.limits.audio_bytes {
            dropped.audio = 1;
            return dropped;
        }
        while let Some((queued_at, _, old)) = self.audio.front() {
            let stale = now.saturating_duration_since(*queued_at) > self.limits.max_delay;
            if !stale && self.audio_bytes + frame.len() <= self.limits.audio_bytes {
                break;
            }
            self.audio_bytes -= old.len();
            self.audio.pop_front();
            dropped.audio += 1;
        }
        self.audio_bytes += frame.len();
        self.audio.push_back((now, subject, frame));
        dropped
    }

    pub fn push_video(&mut self, subject: S, sender: ParticipantId, frame: Bytes) -> Dropped {
        let mut dropped = Dropped::default();
        if let Some(index) = self.video.iter().position(|(s, from, _)| *from == sender && *s == subject) {
            let (_, _, old) = self.video.remove(index).expect("the index was just found");
            self.video_bytes -= old.len();
            dropped.superseded = 1;
        }
        if self.video_bytes + frame.len() > self.limits.video_bytes {
            dropped.video += 1;
            return dropped;
        }
        self.video_bytes += frame.len();
        self.video.push_back((subject, sender, frame));
        dropped
    }

    /// The next audio frame to publish, oldest first.
    pub fn pop_audio(&mut self) -> Option<Publish<S>> {
        let (_, subject, frame) = self.audio.pop_front()?;
        self.audio_bytes -= frame.len();
        Some(Publish { subject, kind: MediaKind::Audio, frame })
    }

    /// The next video frame to publish.
    pub fn pop_video(&mut self) -> Option<Publish<S>> {
        let (subject, _, frame) = self.video.pop_front()?;
        self.video_bytes -= frame.len();
        Some(Publish { subject, kind: MediaKind::Video, frame })
    }

    /// Drops everything (the link is down); returns what was dropped.
    pub fn clear(&mut self) -> Dropped {
        let dropped =
            Dropped { audio: self.audio.len() as u64, video: self.video.len() as u64, superseded: 0 };
        self.audio.clear();
        self.video.clear();
        self.audio_bytes = 0;
        self.video_bytes = 0;
        dropped
    }

    pub fn queued_bytes(&self) -> usize {
        self.audio_bytes + self.video_bytes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const LIMITS: EgressLimits =
        EgressLimits { audio_bytes: 300, video_bytes: 1000, max_delay: Duration::from_millis(500) };

    fn subject(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn bytes(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[test]
    fn audio_and_video_come_out_apart_and_in_order() {
        let now = Instant::now();
        let mut egress = Egress::<Arc<str>>::new(LIMITS);
        egress.push_video(subject("r"), ParticipantId(1), bytes(10, 9));
        egress.push_audio(now, subject("r"), bytes(10, 1));
        egress.push_audio(now, subject("r"), bytes(10, 2));
        let audio: Vec<_> = std::iter::from_fn(|| egress.pop_audio()).map(|p| (p.kind, p.frame[0])).collect();
        assert_eq!(audio, vec![(MediaKind::Audio, 1), (MediaKind::Audio, 2)]);
        let video: Vec<_> = std::iter::from_fn(|| egress.pop_video()).map(|p| (p.kind, p.frame[0])).collect();
        assert_eq!(video, vec![(MediaKind::Video, 9)]);
        assert_eq!(egress.queued_bytes(), 0);
    }

    #[test]
    fn newest_video_per_sender_and_room_wins_and_the_budget_holds() {
        let mut egress = Egress::<Arc<str>>::new(LIMITS);
        assert_eq!(egress.push_video(subject("r"), ParticipantId(1), bytes(400, 1)), Dropped::default());
        let replaced = egress.push_video(subject("r"), ParticipantId(1), bytes(400, 2));
        assert_eq!(replaced.superseded, 1);
        egress.push_video(subject("s"), ParticipantId(1), bytes(400, 3));
        assert_eq!(egress.push_video(subject("r"), ParticipantId(2), bytes(400, 4)).video, 1);
        assert_eq!(egress.queued_bytes(), 800);
        let firsts: Vec<_> = std::iter::from_fn(|| egress.pop_video()).map(|p| p.frame[0]).collect();
        assert_eq!(firsts, vec![2, 3], "a replacing frame waits behind the others");
    }

    #[test]
    fn a_stuck_link_loses_the_oldest_audio_and_stays_bounded() {
        let now = Instant::now();
        let mut egress = Egress::<Arc<str>>::new(LIMITS);
        let mut dropped = 0;
        for i in 0..100u8 {
            dropped += egress.push_audio(now, subject("r"), bytes(100, i)).audio;
            assert!(egress.queued_bytes() <= LIMITS.audio_bytes);
        }
        assert_eq!(dropped, 97);
        assert_eq!(egress.pop_audio().unwrap().frame[0], 97);
        let later = now + Duration::from_millis(600);
        assert_eq!(egress.push_audio(later, subject("r"), bytes(100, 200)).audio, 2, "stale audio goes");
        assert_eq!(egress.push_audio(later, subject("r"), bytes(301, 0)).audio, 1, "too big for the budget");
    }

    #[test]
    fn clearing_counts_what_was_lost() {
        let now = Instant::now();
        let mut egress = Egress::<Arc<str>>::new(LIMITS);
        egress.push_audio(now, subject("r"), bytes(10, 0));
        egress.push_video(subject("r"), ParticipantId(1), bytes(10, 0));
        assert_eq!(egress.clear(), Dropped { audio: 1, video: 1, superseded: 0 });
        assert!(egress.pop_audio().is_none() && egress.pop_video().is_none());
    }
}
