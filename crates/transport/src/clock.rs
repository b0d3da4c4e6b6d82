//! The relay-clock estimate, as a sans-IO core: pongs and `now` in, relay time out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chinwag_proto::RelayTime;

/// How long a pong's sample counts towards the estimate.
const WINDOW: Duration = Duration::from_secs(10);

/// Estimates the relay's clock from ping/pong exchanges.
///
/// For a ping sent at local `t0` and answered at local `t3` with relay time `s`, the relay's
/// clock at `t3` is about `s + rtt/2`. Queueing makes some exchanges slow and their estimate
/// off by up to half the extra delay, so the estimate keeps the sample with the smallest
/// round trip of the last ten seconds.
#[derive(Debug, Clone)]
pub struct RelayClock {
    base: Instant,
    /// (received at, rtt, relay micros minus local micros since `base`)
    samples: VecDeque<(Instant, Duration, i64)>,
    offset_us: Option<i64>,
    last_rtt: Option<Duration>,
}

impl RelayClock {
    pub fn new(base: Instant) -> Self {
        Self { base, samples: VecDeque::new(), offset_us: None, last_rtt: None }
    }

    /// A pong for a ping sent at `sent` arrived at `received` carrying `server_time_us`.
    pub fn handle_pong(&mut self, sent: Instant, received: Instant, server_time_us: u64) {
        let rtt = received.saturating_duration_since(sent);
        let local_us = self.local_us(received);
        let offset = server_time_us as i64 + (rtt.as_micros() / 2) as i64 - local_us;
        while self.samples.front().is_some_and(|(at, _, _)| received.saturating_duration_since(*at) > WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.push_back((received, rtt, offset));
        self.offset_us = self.samples.iter().min_by_key(|(_, rtt, _)| *rtt).map(|(_, _, offset)| *offset);
        self.last_rtt = Some(rtt);
    }

    /// A first, rougher estimate from the `welcome` message, used until the first pong.
    pub fn handle_welcome(&mut self, received: Instant, server_time_us: u64) {
        if self.offset_us.is_none() {
            self.offset_us = Some(server_time_us as i64 - self.local_us(received));
        }
    }

    /// Forgets everything, as after connecting to a (possibly restarted) relay.
    pub fn reset(&mut self) {
        self.samples.clear();
        self.offset_us = None;
        self.last_rtt = None;
    }

    /// The relay clock at local instant `at`, once there is an estimate.
    pub fn relay_time(&self, at: Instant) -> Option<RelayTime> {
        let offset = self.offset_us?;
        Some(RelayTime::from_micros((self.local_us(at) + offset).max(0) as u64))
    }

    /// The round-trip time of the last exchange.
    pub fn rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    fn local_us(&self, at: Instant) -> i64 {
        match at.checked_duration_since(self.base) {
            Some(after) => after.as_micros() as i64,
            None => -(self.base.duration_since(at).as_micros() as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_quickest_exchange_wins() {
        let base = Instant::now();
        let mut clock = RelayClock::new(base);
        assert_eq!(clock.relay_time(base), None);
        // The relay's clock reads local time + 5 s. One exchange is symmetric and quick; one
        // waited 40 ms in a queue on the way back, which makes its estimate 20 ms off.
        let relay_at = |local: Instant| (local - base + Duration::from_secs(5)).as_micros() as u64;
        let sent = base + 100 * MS;
        clock.handle_pong(sent, sent + 50 * MS, relay_at(sent + 5 * MS));
        assert_eq!(clock.rtt(), Some(50 * MS));
        let quick = base + 200 * MS;
        clock.handle_pong(quick, quick + 10 * MS, relay_at(quick + 5 * MS));
        let now = base + 300 * MS;
        let estimate = clock.relay_time(now).unwrap().as_micros() as i64;
        assert!((estimate - relay_at(now) as i64).abs() <= 1, "{estimate} vs {}", relay_at(now));
        // A later slow exchange does not move it.
        let slow = base + 400 * MS;
        clock.handle_pong(slow, slow + 60 * MS, relay_at(slow + 10 * MS));
        let estimate = clock.relay_time(now).unwrap().as_micros() as i64;
        assert!((estimate - relay_at(now) as i64).abs() <= 1);
    }

    #[test]
    fn old_samples_expire_and_welcome_only_seeds() {
        let base = Instant::now();
        let mut clock = RelayClock::new(base);
        clock.handle_welcome(base, 1_000_000);
        assert_eq!(clock.relay_time(base + MS).unwrap().as_micros(), 1_001_000);
        clock.handle_pong(base, base + 2 * MS, 2_000_000);
        assert_eq!(clock.relay_time(base + 2 * MS).unwrap().as_micros(), 2_001_000);
        clock.handle_welcome(base, 0);
        assert_eq!(clock.relay_time(base + 2 * MS).unwrap().as_micros(), 2_001_000, "welcome only seeds");
        // Eleven seconds later the quick sample has expired and a slow one is all there is.
        let later = base + Duration::from_secs(11);
        clock.handle_pong(later, later + 20 * MS, 3_000_000);
        assert_eq!(clock.relay_time(later + 20 * MS).unwrap().as_micros(), 3_010_000);
        clock.reset();
        assert_eq!(clock.relay_time(later), None);
    }
}
