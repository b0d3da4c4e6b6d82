//! Chinwag's priority media queue, shared by everything that sends media: a client's
//! transport, each receiver's queue in the relay, and the relay's queue towards its cluster.
//!
//! It owns one rule: control messages go first, then audio in the order it was queued, then
//! video, holding at most one frame per video source (a newer frame replaces the one still
//! waiting, in its place: JPEG frames stand alone, so any of them can be skipped). Audio has a
//! byte budget, which bounds memory, and a maximum age. Past the byte budget the oldest audio
//! is dropped; what happens when audio waits past its age is the owner's choice
//! ([`AudioPolicy`]): a client or the cluster link drops it too (late audio is worth nothing),
//! while the relay disconnects a receiver that cannot keep up. Bytes are never the verdict on a
//! receiver: a burst a fast reader takes at once must not count against it, only time does.
//! Every frame dropped is counted by its reason ([`Drops`]).
//!
//! It deliberately does no IO and reads no clock: callers pass `now`. Its main type is
//! [`MediaQueue`], generic over a tag that travels with each frame and names its video source
//! (a sender id, a room subject and a sender, or nothing at all).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chinwag_proto::MediaKind;

/// How much may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Bytes of control and audio together.
    pub audio_bytes: usize,
    /// How long the oldest audio frame may wait.
    pub audio_max_age: Duration,
    /// Bytes of video; a video frame beyond it is dropped.
    pub video_bytes: usize,
}

/// What to do when audio waits past its maximum age. Past the byte budget the oldest audio is
/// dropped under either policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioPolicy {
    /// Drop the stale audio: the link must never be given up.
    DropOldest,
    /// Refuse the frame and report [`Pushed::TooSlow`]: the receiver is to be disconnected.
    TooSlowWhenStale,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued, after dropping this many older audio frames that were stale or did not fit.
    QueuedDroppingOldAudio(u64),
    /// Queued in the place of an older video frame from the same source, which is dropped.
    ReplacedOlderVideo,
    /// Not queued: the video budget is used up.
    DroppedVideoOverBudget,
    /// Not queued: the frame alone is larger than its whole budget.
    DroppedOversized,
    /// Not queued: the oldest audio waited past its maximum age (or control alone fills the
    /// budget) and the policy is [`AudioPolicy::TooSlowWhenStale`].
    TooSlow,
}

/// Frames dropped so far, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Audio that waited longer than the maximum age.
    pub audio_stale: u64,
    /// Audio dropped to make room in the byte budget.
    pub audio_overflow: u64,
    /// Frames larger than their whole budget, of either kind.
    pub oversized: u64,
    /// Video replaced by a newer frame from the same source.
    pub video_superseded: u64,
    /// Video that did not fit in the video budget.
    pub video_over_budget: u64,
    /// Media discarded by [`MediaQueue::clear`].
    pub cleared: u64,
}

/// A media frame waiting, with its tag and when it was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued<T> {
    pub kind: MediaKind,
    pub tag: T,
    pub frame: Bytes,
    pub queued_at: Instant,
}

/// The next thing to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<T> {
    Control(String),
    Media(Queued<T>),
}

#[derive(Debug)]
pub struct MediaQueue<T> {
    limits: QueueLimits,
    policy: AudioPolicy,
    control: VecDeque<String>,
    audio: VecDeque<Queued<T>>,
    video: VecDeque<Queued<T>>,
    /// Control and audio bytes waiting.
    urgent_bytes: usize,
    video_bytes: usize,
    drops: Drops,
}

impl<T: PartialEq> MediaQueue<T> {
    pub fn new(limits: QueueLimits, policy: AudioPolicy) -> Self {
        Self {
            limits,
            policy,
            control: VecDeque::new(),
            audio: VecDeque::new(),
            video: VecDeque::new(),
            urgent_bytes: 0,
            video_bytes: 0,
            drops: Drops::default(),
        }
    }

    /// Queues a control message, dropping the oldest audio if that is what it takes to fit.
    /// Under [`AudioPolicy::TooSlowWhenStale`] it is refused when control alone fills the
    /// budget; otherwise control is never dropped (its senders bound it themselves).
    pub fn push_control(&mut self, text: String) -> Pushed {
        let dropped = self.drop_audio_to_fit(text.len());
        if self.policy == AudioPolicy::TooSlowWhenStale
            && self.urgent_bytes + text.len() > self.limits.audio_bytes
        {
            return Pushed::TooSlow;
        }
        self.urgent_bytes += text.len();
        self.control.push_back(text);
        if dropped > 0 { Pushed::QueuedDroppingOldAudio(dropped) } else { Pushed::Queued }
    }

    /// Queues an audio frame. Audio that waited past its age is dropped, or under
    /// [`AudioPolicy::TooSlowWhenStale`] makes the receiver too slow; then the oldest audio is
    /// dropped until the frame fits the byte budget.
    pub fn push_audio(&mut self, now: Instant, tag: T, frame: Bytes) -> Pushed {
        if frame.len() > self.limits.audio_bytes {
            self.drops.oversized += 1;
            return Pushed::DroppedOversized;
        }
        let mut dropped = 0;
        while let Some(oldest) = self.audio.front() {
            if now.saturating_duration_since(oldest.queued_at) <= self.limits.audio_max_age {
                break;
            }
            if self.policy == AudioPolicy::TooSlowWhenStale {
                return Pushed::TooSlow;
            }
            self.pop_dropped_audio();
            self.drops.audio_stale += 1;
            dropped += 1;
        }
        dropped += self.drop_audio_to_fit(frame.len());
        // Control alone can still leave no room: refuse under `TooSlowWhenStale`; otherwise
        // the frame goes in anyway, since control is bounded by its senders.
        if self.policy == AudioPolicy::TooSlowWhenStale
            && self.urgent_bytes + frame.len() > self.limits.audio_bytes
        {
            return Pushed::TooSlow;
        }
        self.urgent_bytes += frame.len();
        self.audio.push_back(Queued { kind: MediaKind::Audio, tag, frame, queued_at: now });
        if dropped > 0 { Pushed::QueuedDroppingOldAudio(dropped) } else { Pushed::Queued }
    }

    /// Drops the oldest audio until `len` more bytes fit the budget, or no audio is left;
    /// returns how many frames went.
    fn drop_audio_to_fit(&mut self, len: usize) -> u64 {
        let mut dropped = 0;
        while self.urgent_bytes + len > self.limits.audio_bytes && self.pop_dropped_audio() {
            self.drops.audio_overflow += 1;
            dropped += 1;
        }
        dropped
    }

    fn pop_dropped_audio(&mut self) -> bool {
        let Some(oldest) = self.audio.pop_front() else { return false };
        self.urgent_bytes -= oldest.frame.len();
        true
    }

    /// Queues a video frame from the source `tag`, replacing one from the same source still
    /// waiting.
    pub fn push_video(&mut self, now: Instant, tag: T, frame: Bytes) -> Pushed {
        if frame.len() > self.limits.video_bytes {
            self.drops.oversized += 1;
            return Pushed::DroppedOversized;
        }
        if let Some(slot) = self.video.iter_mut().find(|waiting| waiting.tag == tag) {
            if self.video_bytes - slot.frame.len() + frame.len() > self.limits.video_bytes {
                self.drops.video_over_budget += 1;
                return Pushed::DroppedVideoOverBudget;
            }
            self.video_bytes = self.video_bytes - slot.frame.len() + frame.len();
            slot.frame = frame;
            slot.queued_at = now;
            self.drops.video_superseded += 1;
            return Pushed::ReplacedOlderVideo;
        }
        if self.video_bytes + frame.len() > self.limits.video_bytes {
            self.drops.video_over_budget += 1;
            return Pushed::DroppedVideoOverBudget;
        }
        self.video_bytes += frame.len();
        self.video.push_back(Queued { kind: MediaKind::Video, tag, frame, queued_at: now });
        Pushed::Queued
    }

    /// The next thing to send, most urgent first.
    pub fn poll_next(&mut self) -> Option<Next<T>> {
        if let Some(next) = self.poll_urgent() {
            return Some(next);
        }
        self.pop_video().map(Next::Media)
    }

    /// The next control message or audio frame, leaving video waiting.
    pub fn poll_urgent(&mut self) -> Option<Next<T>> {
        if let Some(text) = self.control.pop_front() {
            self.urgent_bytes -= text.len();
            return Some(Next::Control(text));
        }
        self.pop_audio().map(Next::Media)
    }

    /// The oldest audio frame.
    pub fn pop_audio(&mut self) -> Option<Queued<T>> {
        let queued = self.audio.pop_front()?;
        self.urgent_bytes -= queued.frame.len();
        Some(queued)
    }

    /// The video frame that has waited longest in line.
    pub fn pop_video(&mut self) -> Option<Queued<T>> {
        let queued = self.video.pop_front()?;
        self.video_bytes -= queued.frame.len();
        Some(queued)
    }

    /// The video frame that would go next, left in place.
    pub fn peek_video(&self) -> Option<&Queued<T>> {
        self.video.front()
    }

    /// Whether a control message or audio frame is waiting.
    pub fn has_urgent(&self) -> bool {
        !self.control.is_empty() || !self.audio.is_empty()
    }

    /// Empties the queue; the media discarded is counted as [`Drops::cleared`] and returned.
    pub fn clear(&mut self) -> u64 {
        let discarded = (self.audio.len() + self.video.len()) as u64;
        self.control.clear();
        self.audio.clear();
        self.video.clear();
        self.urgent_bytes = 0;
        self.video_bytes = 0;
        self.drops.cleared += discarded;
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

    /// Video bytes waiting.
    pub fn queued_video_bytes(&self) -> usize {
        self.video_bytes
    }

    /// What was dropped since the queue was made.
    pub fn drops(&self) -> Drops {
        self.drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueueLimits =
        QueueLimits { audio_bytes: 1000, audio_max_age: Duration::from_millis(500), video_bytes: 1000 };

    fn frame(tag: u8, len: usize) -> Bytes {
        Bytes::from(vec![tag; len])
    }

    fn drain(queue: &mut MediaQueue<u32>) -> Vec<(char, u8)> {
        std::iter::from_fn(|| queue.poll_next())
            .map(|next| match next {
                Next::Control(text) => ('c', text.as_bytes()[0]),
                Next::Media(Queued { kind: MediaKind::Audio, frame, .. }) => ('a', frame[0]),
                Next::Media(Queued { kind: MediaKind::Video, frame, .. }) => ('v', frame[0]),
            })
            .collect()
    }

    #[test]
    fn control_goes_before_audio_before_video() {
        let now = Instant::now();
        let mut queue = MediaQueue::new(LIMITS, AudioPolicy::TooSlowWhenStale);
        assert_eq!(queue.push_video(now, 1, frame(1, 10)), Pushed::Queued);
        assert_eq!(queue.push_audio(now, 0, frame(2, 10)), Pushed::Queued);
        assert_eq!(queue.push_control("3".into()), Pushed::Queued);
        assert_eq!(queue.push_audio(now, 0, frame(4, 10)), Pushed::Queued);
        assert!(queue.has_urgent());
        assert_eq!(drain(&mut queue), vec![('c', b'3'), ('a', 2), ('a', 4), ('v', 1)]);
        assert_eq!(queue.queued_bytes(), 0);
        assert!(!queue.has_urgent());
    }

    #[test]
    fn newest_video_from_a_source_replaces_the_waiting_one_in_its_place() {
        let now = Instant::now();
        let mut queue = MediaQueue::new(LIMITS, AudioPolicy::TooSlowWhenStale);
        queue.push_video(now, 1, frame(1, 100));
        queue.push_video(now, 2, frame(2, 100));
        assert_eq!(queue.push_video(now, 1, frame(3, 300)), Pushed::ReplacedOlderVideo);
        assert_eq!(queue.queued_frames(), (0, 2));
        assert_eq!(queue.queued_bytes(), 400);
        assert_eq!(drain(&mut queue), vec![('v', 3), ('v', 2)]);
        assert_eq!(queue.drops().video_superseded, 1);
    }

    #[test]
    fn video_over_budget_is_dropped_and_audio_still_fits() {
        let now = Instant::now();
        let mut queue = MediaQueue::new(LIMITS, AudioPolicy::TooSlowWhenStale);
        assert_eq!(queue.push_video(now, 1, frame(1, 900)), Pushed::Queued);
        assert_eq!(queue.push_video(now, 2, frame(2, 200)), Pushed::DroppedVideoOverBudget);
        assert_eq!(queue.push_video(now, 1, frame(3, 1001)), Pushed::DroppedOversized);
        assert_eq!(queue.push_audio(now, 0, frame(4, 900)), Pushed::Queued);
        assert_eq!(drain(&mut queue), vec![('a', 4), ('v', 1)]);
        assert_eq!(queue.drops(), Drops { oversized: 1, video_over_budget: 1, ..Drops::default() });
    }

    #[test]
    fn audio_that_waits_too_long_marks_the_receiver_too_slow() {
        let start = Instant::now();
        let later = |ms| start + Duration::from_millis(ms);
        let mut queue = MediaQueue::new(LIMITS, AudioPolicy::TooSlowWhenStale);
        queue.push_audio(start, 0, frame(0, 10));
        assert_eq!(queue.push_audio(later(500), 0, frame(0, 10)), Pushed::Queued);
        assert_eq!(queue.push_audio(later(501), 0, frame(0, 10)), Pushed::TooSlow);
        queue.poll_next();
        assert_eq!(
            queue.push_audio(later(501), 0, frame(0, 10)),
            Pushed::Queued,
            "once the old frame has gone out the receiver has caught up"
        );
    }

    #[test]
    fn a_burst_past_the_byte_budget_drops_the_oldest_audio_and_is_no_verdict() {
        let now = Instant::now();
        let mut queue = MediaQueue::new(LIMITS, AudioPolicy::TooSlowWhenStale);
        for i in 0..10 {
            assert_eq!(queue.push_audio(now, 0, frame(i, 100)), Pushed::Queued);
        }
        // Two frames that each fit the budget alone but not together, as one burst.
        assert_eq!(queue.push_audio(now, 0, frame(10, 900)), Pushed::QueuedDroppingOldAudio(9));
        assert_eq!(queue.push_audio(now, 0, frame(11, 900)), Pushed::QueuedDroppingOldAudio(2));
        assert_eq!(queue.push_control("c".into()), Pushed::Queued);
        assert!(queue.queued_bytes() <= LIMITS.audio_bytes);
        assert_eq!(drain(&mut queue), vec![('c', b'c'), ('a', 11)]);
        assert_eq!(queue.drops().audio_overflow, 11);
    }

    #[test]
    fn control_that_alone_fills_the_budget_is_a_verdict() {
        let now = Instant::now();
        let mut queue = MediaQueue::new(LIMITS, AudioPolicy::TooSlowWhenStale);
        assert_eq!(queue.push_audio(now, 0, frame(0, 500)), Pushed::Queued);
        assert_eq!(queue.push_control("x".repeat(900)), Pushed::QueuedDroppingOldAudio(1));
        assert_eq!(queue.push_control("x".repeat(101)), Pushed::TooSlow);
        assert_eq!(queue.push_audio(now, 0, frame(0, 101)), Pushed::TooSlow);
    }

    #[test]
    fn one_frame_larger_than_the_whole_audio_budget_is_dropped_not_a_verdict() {
        let now = Instant::now();
        let mut queue = MediaQueue::new(LIMITS, AudioPolicy::TooSlowWhenStale);
        queue.push_audio(now, 0, frame(1, 10));
        assert_eq!(queue.push_audio(now, 0, frame(2, 1001)), Pushed::DroppedOversized);
        assert_eq!(queue.push_audio(now, 0, frame(3, 10)), Pushed::Queued);
        assert_eq!(drain(&mut queue), vec![('a', 1), ('a', 3)]);
    }

    #[test]
    fn dropping_the_oldest_keeps_a_stuck_link_bounded_and_fresh() {
        let now = Instant::now();
        let mut queue = MediaQueue::new(
            QueueLimits { audio_bytes: 300, audio_max_age: Duration::from_millis(500), video_bytes: 1000 },
            AudioPolicy::DropOldest,
        );
        let mut dropped = 0;
        for i in 0..100u8 {
            if let Pushed::QueuedDroppingOldAudio(n) = queue.push_audio(now, 0, frame(i, 100)) {
                dropped += n;
            }
            assert!(queue.queued_bytes() <= 300);
        }
        assert_eq!(dropped, 97);
        assert_eq!(queue.pop_audio().unwrap().frame[0], 97);
        let later = now + Duration::from_millis(600);
        assert_eq!(queue.push_audio(later, 0, frame(200, 100)), Pushed::QueuedDroppingOldAudio(2));
        assert_eq!(queue.drops().audio_stale, 2);
        assert_eq!(queue.drops().audio_overflow, 97);
    }

    #[test]
    fn urgent_and_video_can_be_taken_apart() {
        let now = Instant::now();
        let mut queue = MediaQueue::new(LIMITS, AudioPolicy::DropOldest);
        queue.push_video(now, 7, frame(9, 10));
        queue.push_audio(now, 0, frame(1, 10));
        assert!(matches!(queue.poll_urgent(), Some(Next::Media(Queued { kind: MediaKind::Audio, .. }))));
        assert_eq!(queue.poll_urgent(), None, "video is not urgent");
        assert_eq!(queue.pop_video().map(|queued| queued.tag), Some(7));
    }

    #[test]
    fn clearing_counts_the_discarded_media() {
        let now = Instant::now();
        let mut queue = MediaQueue::new(LIMITS, AudioPolicy::TooSlowWhenStale);
        queue.push_audio(now, 0, frame(0, 10));
        queue.push_video(now, 1, frame(0, 10));
        queue.push_control("hello".into());
        assert_eq!(queue.clear(), 2);
        assert_eq!(queue.drops().cleared, 2);
        assert_eq!(queue.queued_bytes(), 0);
        assert_eq!(queue.poll_next(), None);
    }
}
