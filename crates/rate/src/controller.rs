//! The sending rate a link can carry without queueing, found by watching queueing delay: a
//! delay-based controller in the spirit of WebRTC's GCC.
//!
//! It starts low and climbs quickly (half again per second) until the link first shows a
//! queue (a queueing delay over 40 ms, or the sender's own queue backing up); then it sets the
//! rate to a little under what the link delivered (as the far end counted it, where it says),
//! holds while the queue drains (cutting again if it does not), and climbs again: quickly
//! while far below the rate at which the link had trouble, slowly near it, and never past 85 %
//! of it until that trouble is half a minute old. So it finds the link within a few seconds
//! and does not fill it again every few seconds; and when the link gets faster, it notices
//! within a minute.

use std::time::{Duration, Instant};

/// What the controller is told about the link, every so often.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkSignals {
    /// How much longer than the quickest recent trip data takes now (queues on the path).
    pub queue_delay: Option<Duration>,
    /// What the link delivered recently, in bits per second.
    pub delivered_bps: Option<f64>,
    /// The sender's own queue is backing up (frames replaced before they went out, or bytes
    /// waiting for more than a moment): more is offered than the link takes.
    pub backlog: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    pub min_bps: f64,
    pub max_bps: f64,
    pub start_bps: f64,
    /// Queueing delay beyond which the link counts as overused.
    pub overuse_delay: Duration,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            min_bps: 100_000.0,
            max_bps: 10_000_000.0,
            start_bps: 400_000.0,
            overuse_delay: Duration::from_millis(40),
        }
    }
}

/// After a cut, how long to hold before climbing again: the queue needs a moment to drain.
const HOLD: Duration = Duration::from_millis(600);
/// The share of the delivered rate a cut goes to.
const CUT_TO: f64 = 0.85;
/// With a long queue to drain, a deeper cut.
const DRAIN_TO: f64 = 0.6;
const DEEP_QUEUE: Duration = Duration::from_millis(250);
/// Climbing before the link has shown any limit: per second.
const START_GROWTH: f64 = 1.5;
/// Climbing once it has, near where it had trouble: per second.
const GROWTH: f64 = 1.08;
/// Climbing once it has, far below that: per second.
const FAST_GROWTH: f64 = 1.3;
/// What counts as far below.
const FAR_BELOW: f64 = 0.7;
/// How close to the rate of the last trouble the rate may climb while that trouble is recent.
const CEILING: f64 = 0.85;
/// While draining, a queue must shrink at least this much per hold to count as draining.
const SHRINKING: Duration = Duration::from_millis(20);
/// How far above the delivered rate the rate may climb: twice, since a video sender's rungs
/// are coarse and the next one up may cost half again what the current one does.
const DELIVERED_HEADROOM: f64 = 2.0;
/// How much less than the link a link that is draining a queue can seem to deliver (its far
/// end counts over a second that may include the cut), at most.
const DRAINING_UNDERSTATES: f64 = 1.5;
/// How long trouble is remembered at full strength; after that the ceiling lifts gradually.
const MEMORY: Duration = Duration::from_secs(30);

/// The rate to send at, from the link's signals and `now`.
#[derive(Debug, Clone)]
pub struct RateController {
    config: RateConfig,
    target: f64,
    hold_until: Option<Instant>,
    /// The rate the link delivered when it last overflowed, and when.
    trouble: Option<(f64, Instant)>,
    /// Set at a cut until the queue has drained: the queueing delay then.
    draining: Option<Duration>,
    last_update: Option<Instant>,
    overuses: u64,
}

impl RateController {
    pub fn new(config: RateConfig) -> Self {
        let target = config.start_bps.clamp(config.min_bps, config.max_bps);
        Self {
            config,
            target,
            hold_until: None,
            trouble: None,
            draining: None,
            last_update: None,
            overuses: 0,
        }
    }

    /// Takes what the link looks like at `now`; returns the rate to send at, in bits per
    /// second.
    pub fn handle_signals(&mut self, now: Instant, signals: LinkSignals) -> f64 {
        let elapsed = self.last_update.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.last_update = Some(now);
        let queue = signals.queue_delay.unwrap_or_default();
        let overused = queue > self.config.overuse_delay || signals.backlog;
        let holding = self.hold_until.is_some_and(|until| now < until);
        if let Some(level) = self.draining {
            if !overused {
                // The queue has drained: climbing may start again.
                self.draining = None;
            } else {
                // While the queue drains no new verdict, and no climbing. Once the hold is
                // over: a queue that is still shrinking gets more time; one that is not was
                // cut too little (or the link got slower still), and is cut again.
                if !holding {
                    if queue + SHRINKING <= level {
                        self.draining = Some(queue);
                        self.hold_until = Some(now + HOLD / 2);
                    } else {
                        self.overuses += 1;
                        let delivered = signals.delivered_bps.filter(|bps| *bps > 0.0).unwrap_or(self.target);
                        self.target = self.target.min(delivered) * DRAIN_TO;
                        // The link's rate is about what it delivered when it first filled:
                        // cut already, it delivers less while it drains, and remembering that
                        // would hold the rate below the link for the next half minute. But
                        // no more than a little above what it delivers now: a link that
                        // suddenly got slower delivered the old rate when it first filled.
                        let before = self.trouble.map_or(0.0, |(rate, _)| rate);
                        let remembered = before.min(delivered * DRAINING_UNDERSTATES);
                        self.trouble = Some((delivered.max(remembered), now));
                        self.draining = Some(queue);
                        self.hold_until = Some(now + HOLD);
                    }
                }
                self.target = self.target.clamp(self.config.min_bps, self.config.max_bps);
                return self.target;
            }
        }
        if overused && !holding {
            self.overuses += 1;
            let delivered = signals.delivered_bps.filter(|bps| *bps > 0.0).unwrap_or(self.target);
            let share = if queue > DEEP_QUEUE { DRAIN_TO } else { CUT_TO };
            self.target = (delivered * share).min(self.target);
            self.trouble = Some((delivered, now));
            self.draining = Some(queue);
            self.hold_until = Some(now + HOLD.max(queue));
        } else if !overused && !holding {
            let ceiling = self.ceiling(now);
            let growth = match ceiling {
                None => START_GROWTH,
                // Far below where the link had trouble: back up quickly.
                Some(ceiling) if self.target < ceiling * FAR_BELOW => FAST_GROWTH,
                Some(_) => GROWTH,
            };
            let mut next = self.target * growth.powf(elapsed.as_secs_f64());
            if let Some(ceiling) = ceiling {
                // Never climb past the ceiling, but never fall because of it either.
                next = next.min(ceiling.max(self.target));
            }
            // Nor far past what the link is seen to deliver: until the sender uses a rate, it
            // says nothing about the link, and a queue takes a moment to show (WebRTC's
            // acknowledged-rate bound).
            if let Some(delivered) = signals.delivered_bps.filter(|bps| *bps > 0.0) {
                next = next.min((delivered * DELIVERED_HEADROOM).max(self.target));
            }
            self.target = next;
        }
        self.target = self.target.clamp(self.config.min_bps, self.config.max_bps);
        self.target
    }

    /// How far the rate may climb now: just under the last trouble while it is recent, then
    /// gradually more.
    fn ceiling(&self, now: Instant) -> Option<f64> {
        let (rate, at) = self.trouble?;
        let age = now.saturating_duration_since(at);
        let lifted = age.saturating_sub(MEMORY).as_secs_f64();
        Some(rate * CEILING * GROWTH.powf(lifted))
    }

    pub fn target_bps(&self) -> f64 {
        self.target
    }

    /// How many times the link was found overused.
    pub fn overuses(&self) -> u64 {
        self.overuses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_climbs_no_further_than_twice_what_the_link_delivers() {
        let start = Instant::now();
        let mut controller =
            RateController::new(RateConfig { start_bps: 400_000.0, ..RateConfig::default() });
        let calm = |delivered: f64| LinkSignals {
            queue_delay: Some(Duration::ZERO),
            delivered_bps: Some(delivered),
            backlog: false,
        };
        for step in 0..=100u32 {
            controller.handle_signals(start + step * Duration::from_millis(100), calm(500_000.0));
        }
        assert_eq!(controller.target_bps(), 1_000_000.0, "a sender using 0.5 Mb/s learns little above it");
        // Once the sender uses more, the rate climbs with it.
        for step in 101..=200u32 {
            let used = controller.target_bps();
            controller.handle_signals(start + step * Duration::from_millis(100), calm(used));
        }
        assert!(controller.target_bps() > 5_000_000.0, "{}", controller.target_bps());
    }

    #[test]
    fn a_link_that_suddenly_slows_is_not_filled_again_at_its_old_rate() {
        let start = Instant::now();
        let ms = Duration::from_millis(1);
        let mut controller =
            RateController::new(RateConfig { start_bps: 3_000_000.0, ..RateConfig::default() });
        let signals = |queue_ms: u32, delivered: f64| LinkSignals {
            queue_delay: Some(queue_ms * ms),
            delivered_bps: Some(delivered),
            backlog: false,
        };
        // A 4 Mb/s link carrying 3 Mb/s drops to 0.5 Mb/s: the queue shows while the far end
        // still counts the old rate, then stays while it counts the new one.
        controller.handle_signals(start, signals(0, 3_000_000.0));
        controller.handle_signals(start + 200 * ms, signals(150, 2_500_000.0));
        let mut now = start + 200 * ms;
        for _ in 0..6 {
            now += 400 * ms;
            controller.handle_signals(now, signals(300, 500_000.0));
        }
        // Calm again, the sender using what it is allowed: it climbs, but not past the new link.
        let mut highest: f64 = 0.0;
        for _ in 0..150 {
            now += 100 * ms;
            let used = controller.target_bps().min(500_000.0);
            highest = highest.max(controller.handle_signals(now, signals(0, used)));
        }
        assert!(highest <= 650_000.0, "climbed to {highest} b/s on a 0.5 Mb/s link");
    }
}
