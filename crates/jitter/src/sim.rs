//! A seeded network model for virtual-time tests (feature `sim`): when each packet sent
//! arrives, through a path with a base latency, jitter, TCP-like ordering, periodic stalls,
//! reordering, loss and duplication. The scenario tests of this crate and of the call core
//! drive it; nothing here reads a clock.

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

/// Periodic TCP head-of-line stalls: nothing is delivered during a stall, and everything held
/// back is delivered in order at its end.
#[derive(Debug, Clone, Copy)]
pub struct Stalls {
    /// Time from the end of one stall to the start of the next, drawn uniformly.
    pub gap: (Duration, Duration),
    /// Length of a stall, drawn uniformly.
    pub length: (Duration, Duration),
}

/// A path from one sender to one receiver.
#[derive(Debug, Clone)]
pub struct Network {
    /// The fastest path.
    pub base_latency: Duration,
    /// Extra delay per packet, uniform in `0..jitter`.
    pub jitter: Duration,
    /// Whether the network keeps packets in order, as TCP does: a packet delayed less than
    /// its predecessor waits for it.
    pub in_order: bool,
    pub stalls: Option<Stalls>,
    /// Chance that a packet and its successor swap places (after `in_order` is applied).
    pub swap_probability: f64,
    /// Chance that a packet is never delivered, as when the relay drops it from a full queue.
    pub loss_probability: f64,
    /// Chance that a packet is delivered twice, the copy 0–40 ms after the original.
    pub duplicate_probability: f64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            base_latency: Duration::from_millis(30),
            jitter: Duration::ZERO,
            in_order: true,
            stalls: None,
            swap_probability: 0.0,
            loss_probability: 0.0,
            duplicate_probability: 0.0,
        }
    }
}

/// What the network did to a run of packets.
#[derive(Debug, Clone, Default)]
pub struct Deliveries {
    /// `(arrival, index of the packet sent)`, in delivery order.
    pub arrivals: Vec<(Duration, usize)>,
    /// The stalls, as `(start, end)`.
    pub stalls: Vec<(Duration, Duration)>,
}

impl Network {
    /// When the packets sent at `sent_at` (in order) arrive, for a run of `duration`.
    pub fn deliver(&self, sent_at: &[Duration], duration: Duration, rng: &mut SmallRng) -> Deliveries {
        let stalls = self.stall_windows(duration, rng);
        let mut previous = Duration::ZERO;
        let mut arrivals: Vec<(Duration, usize)> = sent_at
            .iter()
            .enumerate()
            .map(|(idx, &at)| {
                let mut at = at + self.base_latency + self.jitter.mul_f64(rng.random());
                if let Some(&(_, stall_end)) = stalls.iter().find(|(start, end)| (*start..*end).contains(&at))
                {
                    at = stall_end;
                }
                if self.in_order {
                    at = at.max(previous);
                    previous = at;
                }
                (at, idx)
            })
            .collect();
        if self.swap_probability > 0.0 {
            let mut idx = 0;
            while idx + 1 < arrivals.len() {
                if rng.random_bool(self.swap_probability) {
                    let (first, second) = (arrivals[idx].1, arrivals[idx + 1].1);
                    arrivals[idx].1 = second;
                    arrivals[idx + 1].1 = first;
                    idx += 1;
                }
                idx += 1;
            }
        }
        if self.loss_probability > 0.0 {
            arrivals.retain(|_| !rng.random_bool(self.loss_probability));
        }
        if self.duplicate_probability > 0.0 {
            let copies: Vec<_> = arrivals
                .iter()
                .filter_map(|&(at, idx)| {
                    let copy_at = at + Duration::from_millis(40).mul_f64(rng.random());
                    rng.random_bool(self.duplicate_probability).then_some((copy_at, idx))
                })
                .collect();
            arrivals.extend(copies);
        }
        // Stable: packets arriving at the same instant keep their delivery order.
        arrivals.sort_by_key(|&(at, _)| at);
        Deliveries { arrivals, stalls }
    }

    fn stall_windows(&self, duration: Duration, rng: &mut SmallRng) -> Vec<(Duration, Duration)> {
        let Some(stalls) = self.stalls else {
            return Vec::new();
        };
        let mut windows = Vec::new();
        let mut at = Duration::ZERO;
        loop {
            at += rng.random_range(stalls.gap.0..=stalls.gap.1);
            let length = rng.random_range(stalls.length.0..=stalls.length.1);
            if at + length >= duration {
                break windows;
            }
            windows.push((at, at + length));
            at += length;
        }
    }
}
