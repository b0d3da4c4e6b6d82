//! One receiver's send queue, as a sans-IO core: frames in with `now`, frames out in the order
//! they should go on the wire, and a verdict when the receiver cannot keep up.
//!
//! Control messages go first, then audio in arrival order, then video. Video holds at most one
//! frame per sender: a newer frame replaces an older one still waiting (JPEG frames stand
//! alone, so any of them can be skipped). Audio is never dropped to make room; a receiver
//! whose audio backs up past its byte or delay budget is too slow and is to be disconnected,
//! so that it never slows the sender or anyone else and the relay's memory stays bounded.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chinwag_proto::{MediaKind, ParticipantId};

/// How much one receiver may have waiting.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Bytes of control and audio; beyond it the receiver is too slow.
    pub audio_bytes: usize,
    /// Bytes of video; a video frame beyond it is dropped.
    pub video_bytes: usize,
    /// How long the oldest audio frame may wait; beyond it the receiver is too slow.
    pub max_delay: Duration,
}

/// What went into the queue, or what happened instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued, replacing an older video frame from the same sender, which is dropped.
    ReplacedOlderVideo,
    /// Not queued: the video budget is used up.
    DroppedVideoFull,
    /// Not queued: the receiver is too far behind and should be disconnected.
    TooSlow,
}

/// Something to write to the receiver's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Control(String),
    Media { kind: MediaKind, frame: Bytes },
}

#[derive(Debug)]
pub struct OutQueue {
    limits: QueueLimits,
    control: VecDeque<String>,
    audio: VecDeque<(Instant, Bytes)>,
    video: VecDeque<(ParticipantId, Bytes)>,
    /// Control and audio bytes waiting.
    urgent_bytes: usize,
    video_bytes: usize,
}

impl OutQueue {
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            limits,
            control: VecDeque::new(),
            audio: VecDeque::new(),
            video: VecDeque::new(),
            urgent_bytes: 0,
            video_bytes: 0,
        }
    }

    pub fn push_control(&mut self, text: String) -> Pushed {
        if self.urgent_bytes + text.len() > self.limits.audio_bytes {
            return Pushed::TooSlow;
        }
        self.urgent_bytes += text.len();
        self.control.push_back(text);
        Pushed::Queued
    }

    pub fn push_audio(&mut self, now: Instant, frame: Bytes) -> Pushed {
        let oldest_waited_too_long = self
            .audio
            .front()
            .is_some_and(|(queued_at, _)| now.saturating_duration_since(*queued_at) > self.limits.max_delay);
        if oldest_waited_too_long || self.urgent_bytes + frame.len() > self.limits.audio_bytes {
            return Pushed::TooSlow;
        }
        self.urgent_bytes += frame.len();
        self.audio.push_back((now, frame));
        Pushed::Queued
    }

    pub fn push_video(&mut self, sender: ParticipantId, frame: Bytes) -> Pushed {
        if let Some(slot) = self.video.iter_mut().find(|(from, _)| *from == sender) {
            let fits = self.video_bytes - slot.1.len() + frame.len() <= self.limits.video_bytes;
            if !fits {
                return Pushed::DroppedVideoFull;
            }
            self.video_bytes = self.video_bytes - slot.1.len() + frame.len();
            slot.1 = frame;
            return Pushed::ReplacedOlderVideo;
        }
        if self.video_bytes + frame.len() > self.limits.video_bytes {
            return Pushed::DroppedVideoFull;
        }
        self.video_bytes += frame.len();
        self.video.push_back((sender, frame));
        Pushed::Queued
    }

    /// The next thing to send, most urgent first.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        if let Some(text) = self.control.pop_front() {
            self.urgent_bytes -= text.len();
            return Some(Outgoing::Control(text));
        }
        if let Some((_, frame)) = self.audio.pop_front() {
            self.urgent_bytes -= frame.len();
            return Some(Outgoing::Media { kind: MediaKind::Audio, frame });
        }
        let (_, frame) = self.video.pop_front()?;
        self.video_bytes -= frame.len();
        Some(Outgoing::Media { kind: MediaKind::Video, frame })
    }

    /// Empties the queue, returning how many media frames were discarded.
    pub fn clear(&mut self) -> usize {
        let discarded = self.audio.len() + self.video.len();
        *self = OutQueue::new(self.limits);
        discarded
    }

    /// Audio and video frames waiting.
    pub fn queued_frames(&self) -> (usize, usize) {
        (self.audio.len(), self.video.len())
    }

    /// All bytes waiting, control included.
    pub fn queued_bytes(&self) -> usize {
        self.urgent_bytes + self.video_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueueLimits =
        QueueLimits { audio_bytes: 1000, video_bytes: 1000, max_delay: Duration::from_millis(500) };

    fn frame(tag: u8, len: usize) -> Bytes {
        Bytes::from(vec![tag; len])
    }

    fn drain(queue: &mut OutQueue) -> Vec<(char, u8)> {
        std::iter::from_fn(|| queue.poll_transmit())
            .map(|out| match out {
                Outgoing::Control(text) => ('c', text.as_bytes()[0]),
                Outgoing::Media { kind: MediaKind::Audio, frame } => ('a', frame[0]),
                Outgoing::Media { kind: MediaKind::Video, frame } => ('v', frame[0]),
            })
            .collect()
    }

    #[test]
    fn control_goes_before_audio_before_video() {
        let now = Instant::now();
        let mut queue = OutQueue::new(LIMITS);
        assert_eq!(queue.push_video(ParticipantId(1), frame(1, 10)), Pushed::Queued);
        assert_eq!(queue.push_audio(now, frame(2, 10)), Pushed::Queued);
        assert_eq!(queue.push_control("3".into()), Pushed::Queued);
        assert_eq!(queue.push_audio(now, frame(4, 10)), Pushed::Queued);
        assert_eq!(drain(&mut queue), vec![('c', b'3'), ('a', 2), ('a', 4), ('v', 1)]);
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[test]
    fn newest_video_from_a_sender_replaces_the_waiting_one() {
        let mut queue = OutQueue::new(LIMITS);
        queue.push_video(ParticipantId(1), frame(1, 100));
        queue.push_video(ParticipantId(2), frame(2, 100));
        assert_eq!(queue.push_video(ParticipantId(1), frame(3, 300)), Pushed::ReplacedOlderVideo);
        assert_eq!(queue.queued_frames(), (0, 2));
        assert_eq!(queue.queued_bytes(), 400);
        assert_eq!(drain(&mut queue), vec![('v', 3), ('v', 2)]);
    }

    #[test]
    fn video_over_budget_is_dropped_and_audio_still_fits() {
        let now = Instant::now();
        let mut queue = OutQueue::new(LIMITS);
        assert_eq!(queue.push_video(ParticipantId(1), frame(1, 900)), Pushed::Queued);
        assert_eq!(queue.push_video(ParticipantId(2), frame(2, 200)), Pushed::DroppedVideoFull);
        assert_eq!(queue.push_video(ParticipantId(1), frame(3, 1001)), Pushed::DroppedVideoFull);
        assert_eq!(queue.push_audio(now, frame(4, 900)), Pushed::Queued);
        assert_eq!(drain(&mut queue), vec![('a', 4), ('v', 1)]);
    }

    #[test]
    fn audio_backing_up_in_bytes_or_time_makes_the_receiver_too_slow() {
        let start = Instant::now();
        let mut queue = OutQueue::new(LIMITS);
        for _ in 0..10 {
            assert_eq!(queue.push_audio(start, frame(0, 100)), Pushed::Queued);
        }
        assert_eq!(queue.push_audio(start, frame(0, 1)), Pushed::TooSlow);
        assert_eq!(queue.push_control("x".into()), Pushed::TooSlow);

        let mut queue = OutQueue::new(LIMITS);
        queue.push_audio(start, frame(0, 10));
        assert_eq!(queue.push_audio(start + Duration::from_millis(500), frame(0, 10)), Pushed::Queued);
        assert_eq!(queue.push_audio(start + Duration::from_millis(501), frame(0, 10)), Pushed::TooSlow);
        queue.poll_transmit();
        assert_eq!(
            queue.push_audio(start + Duration::from_millis(501), frame(0, 10)),
            Pushed::Queued,
            "once the old frame has gone out the receiver has caught up"
        );
    }

    #[test]
    fn clear_counts_the_discarded_media() {
        let now = Instant::now();
        let mut queue = OutQueue::new(LIMITS);
        queue.push_audio(now, frame(0, 10));
        queue.push_video(ParticipantId(1), frame(0, 10));
        queue.push_control("hello".into());
        assert_eq!(queue.clear(), 2);
        assert_eq!(queue.queued_bytes(), 0);
        assert_eq!(queue.poll_transmit(), None);
    }
}
