//! Video send adaptation, as a sans-IO core: what the send path and the network look like in,
//! the frame rate, quality and size to send at out.
//!
//! When the send path backs up (the transport replaced a video frame that had not gone out
//! yet) or the round trip rises well above its quiet level, it steps down: first the frame
//! rate, then the JPEG quality, then the size. After a spell without trouble it climbs back
//! one step at a time. Audio is never touched: it has its own queue ahead of video.

use std::time::{Duration, Instant};

/// One rung of the ladder, from the best (index 0) down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoLevel {
    /// Send one frame in `fps_divisor`.
    pub fps_divisor: u32,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
    /// Width and height are divided by this.
    pub size_divisor: u32,
}

/// The ladder for a default quality `q`: frame rate first, then quality, then size.
fn ladder(q: u8) -> [VideoLevel; 6] {
    let lower = |by: u8| q.saturating_sub(by).max(20);
    [
        VideoLevel { fps_divisor: 1, quality: q, size_divisor: 1 },
        VideoLevel { fps_divisor: 2, quality: q, size_divisor: 1 },
        VideoLevel { fps_divisor: 3, quality: q, size_divisor: 1 },
        VideoLevel { fps_divisor: 3, quality: lower(20), size_divisor: 1 },
        VideoLevel { fps_divisor: 3, quality: lower(35), size_divisor: 1 },
        VideoLevel { fps_divisor: 3, quality: lower(35), size_divisor: 2 },
    ]
}

/// After trouble, how long before stepping down again (let the last step take effect).
const STEP_DOWN_HOLD: Duration = Duration::from_millis(500);
/// How long without trouble before climbing one step.
const CLIMB_AFTER: Duration = Duration::from_secs(3);
/// An RTT this much above the quietest recent one counts as trouble.
const RTT_RISE: Duration = Duration::from_millis(80);

#[derive(Debug)]
pub struct VideoAdapter {
    ladder: [VideoLevel; 6],
    index: usize,
    last_change: Option<Instant>,
    last_trouble: Option<Instant>,
    replaced_seen: u64,
    quiet_rtt: Option<Duration>,
}

impl VideoAdapter {
    pub fn new(quality: u8) -> Self {
        Self {
            ladder: ladder(quality),
            index: 0,
            last_change: None,
            last_trouble: None,
            replaced_seen: 0,
            quiet_rtt: None,
        }
    }

    /// Takes the transport's count of video frames replaced before they went out, and the
    /// latest RTT, at `now`; returns the level to send at.
    pub fn handle_send_state(
        &mut self,
        now: Instant,
        replaced_total: u64,
        rtt: Option<Duration>,
    ) -> VideoLevel {
        let backed_up = replaced_total > self.replaced_seen;
        self.replaced_seen = replaced_total;
        let rtt_high = match (rtt, self.quiet_rtt) {
            (Some(rtt), Some(quiet)) => rtt > quiet + RTT_RISE,
            _ => false,
        };
        if let Some(rtt) = rtt {
            // The quiet level follows the minimum, and creeps up slowly so that a route change
            // is eventually accepted as the new normal.
            self.quiet_rtt = Some(match self.quiet_rtt {
                Some(quiet) if rtt >= quiet => quiet + (rtt - quiet) / 64,
                _ => rtt,
            });
        }
        let held = self.last_change.is_some_and(|at| now.saturating_duration_since(at) < STEP_DOWN_HOLD);
        if backed_up || rtt_high {
            self.last_trouble = Some(now);
            if !held && self.index + 1 < self.ladder.len() {
                self.index += 1;
                self.last_change = Some(now);
            }
        } else if self.index > 0 {
            let calm_since = self.last_trouble.max(self.last_change).unwrap_or(now);
            if now.saturating_duration_since(calm_since) >= CLIMB_AFTER {
                self.index -= 1;
                self.last_change = Some(now);
            }
        }
        self.ladder[self.index]
    }

    pub fn level(&self) -> VideoLevel {
        self.ladder[self.index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backing_up_lowers_rate_then_quality_then_size_and_calm_climbs_back() {
        let start = Instant::now();
        let mut adapter = VideoAdapter::new(75);
        let rtt = Some(2 * MS);
        assert_eq!(adapter.handle_send_state(start, 0, rtt), ladder(75)[0]);
        // The send path keeps backing up: one step per 500 ms.
        let mut replaced = 0;
        let mut levels = Vec::new();
        for step in 1..=40 {
            replaced += 1;
            levels.push(adapter.handle_send_state(start + step * 100 * MS, replaced, rtt));
        }
        let last = *levels.last().unwrap();
        assert_eq!(last, VideoLevel { fps_divisor: 3, quality: 40, size_divisor: 2 }, "bottom of the ladder");
        let first_quality_drop = levels.iter().position(|l| l.quality < 75).unwrap();
        let first_rate_drop = levels.iter().position(|l| l.fps_divisor > 1).unwrap();
        let first_size_drop = levels.iter().position(|l| l.size_divisor > 1).unwrap();
        assert!(first_rate_drop < first_quality_drop && first_quality_drop < first_size_drop);

        // Calm: one step back every 3 s.
        let calm_start = start + 4100 * MS;
        assert_eq!(adapter.handle_send_state(calm_start, replaced, rtt), last);
        assert_eq!(adapter.handle_send_state(calm_start + 2800 * MS, replaced, rtt), last);
        assert_ne!(adapter.handle_send_state(calm_start + 4100 * MS, replaced, rtt), last);
        let mut at = calm_start + 4100 * MS;
        for _ in 0..10 {
            at += 3100 * MS;
            adapter.handle_send_state(at, replaced, rtt);
        }
        assert_eq!(adapter.level(), ladder(75)[0], "back to full quality");
    }

    #[test]
    fn a_rising_round_trip_counts_as_trouble_and_a_steady_one_does_not() {
        let start = Instant::now();
        let mut adapter = VideoAdapter::new(75);
        for step in 0..50 {
            adapter.handle_send_state(start + step * 100 * MS, 0, Some(Duration::from_millis(40)));
        }
        assert_eq!(adapter.level(), ladder(75)[0], "a steady 40 ms is normal");
        adapter.handle_send_state(start + 5100 * MS, 0, Some(Duration::from_millis(300)));
        assert_eq!(adapter.level().fps_divisor, 2);
    }
}
