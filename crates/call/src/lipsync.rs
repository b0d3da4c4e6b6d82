//! Lip sync: a peer's decoded video is held until the audio captured with it is heard.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Frames held per peer; when audio is so far behind that more wait, the oldest is shown
/// early rather than the queue growing.
const PENDING_KEPT: usize = 8;
/// The longest a frame is held back for its audio: beyond it, late audio is a problem of its
/// own, and frozen video would only make it worse.
const MAX_HOLD: Duration = Duration::from_millis(500);

/// One peer's video on its way to the screen.
#[derive(Debug)]
pub struct LipSync<F> {
    pending: VecDeque<(Instant, F)>,
    shown: Option<F>,
    shown_early: u64,
}

impl<F> Default for LipSync<F> {
    fn default() -> Self {
        Self { pending: VecDeque::new(), shown: None, shown_early: 0 }
    }
}

impl<F: Clone> LipSync<F> {
    /// A frame decoded at `now`, `video_delay` after it was captured (glass to glass), from a
    /// peer whose audio is heard `audio_delay` after capture (mouth to ear); either may be
    /// unknown, and then the frame is shown at once.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        frame: F,
        video_delay: Option<Duration>,
        audio_delay: Option<Duration>,
    ) {
        let hold = match (audio_delay, video_delay) {
            (Some(audio), Some(video)) => audio.saturating_sub(video).min(MAX_HOLD),
            _ => Duration::ZERO,
        };
        if self.pending.len() == PENDING_KEPT {
            let _shown_early_because_audio_is_far_behind = self.pending.pop_front();
            self.shown_early += 1;
        }
        self.pending.push_back((now + hold, frame));
    }

    /// The newest frame whose time has come (or the last one shown).
    pub fn poll_frame(&mut self, now: Instant) -> Option<F> {
        while self.pending.front().is_some_and(|(show_at, _)| *show_at <= now) {
            self.shown = self.pending.pop_front().map(|(_, frame)| frame);
        }
        self.shown.clone()
    }

    /// Frames shown before their audio because too many were waiting.
    pub fn shown_early(&self) -> u64 {
        self.shown_early
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn video_waits_for_its_audio() {
        let start = Instant::now();
        let mut sync = LipSync::default();
        // Video took 30 ms, audio takes 80 ms: the frame waits 50 ms.
        sync.handle_frame(start, 1, Some(30 * MS), Some(80 * MS));
        assert_eq!(sync.poll_frame(start + 49 * MS), None);
        assert_eq!(sync.poll_frame(start + 50 * MS), Some(1));
        // Video slower than audio: shown at once.
        sync.handle_frame(start + 60 * MS, 2, Some(120 * MS), Some(80 * MS));
        assert_eq!(sync.poll_frame(start + 60 * MS), Some(2));
        // Nothing known about the audio: shown at once.
        sync.handle_frame(start + 70 * MS, 3, Some(10 * MS), None);
        assert_eq!(sync.poll_frame(start + 70 * MS), Some(3));
    }

    #[test]
    fn the_newest_due_frame_wins_and_holds_are_bounded() {
        let start = Instant::now();
        let mut sync = LipSync::default();
        for (idx, at) in [0u32, 10, 20].into_iter().enumerate() {
            sync.handle_frame(start + at * MS, idx, Some(Duration::ZERO), Some(40 * MS));
        }
        assert_eq!(sync.poll_frame(start + 55 * MS), Some(1), "frames 0 and 1 are due, 1 is newest");
        sync.handle_frame(start, 9, Some(Duration::ZERO), Some(Duration::from_secs(5)));
        assert_eq!(sync.poll_frame(start + MAX_HOLD), Some(9), "never held past the maximum");
    }

    #[test]
    fn a_full_queue_shows_the_oldest_early() {
        let start = Instant::now();
        let mut sync = LipSync::default();
        for idx in 0..PENDING_KEPT + 2 {
            sync.handle_frame(start, idx, Some(Duration::ZERO), Some(400 * MS));
        }
        assert_eq!(sync.shown_early(), 2);
        assert_eq!(sync.poll_frame(start + 400 * MS), Some(PENDING_KEPT + 1));
    }
}
