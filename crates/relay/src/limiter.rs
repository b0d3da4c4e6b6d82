//! Per-connection rate limits, as a sans-IO core: two token buckets, one for messages and one
//! for bytes, each refilled at its sustained rate and holding two seconds' worth as burst.

use std::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    messages: Bucket,
    bytes: Bucket,
}

#[derive(Debug)]
struct Bucket {
    per_sec: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

/// How many seconds of the sustained rate a connection may send at once.
const BURST_SECONDS: f64 = 2.0;

impl RateLimiter {
    pub fn new(now: Instant, messages_per_sec: u32, bytes_per_sec: u64) -> Self {
        Self {
            messages: Bucket::new(now, messages_per_sec as f64),
            bytes: Bucket::new(now, bytes_per_sec as f64),
        }
    }

    /// Whether a message of `len` bytes arriving at `now` is within the limits. A message that
    /// is refused takes no tokens.
    pub fn handle_message(&mut self, now: Instant, len: usize) -> bool {
        self.messages.refill(now);
        self.bytes.refill(now);
        let allowed = self.messages.tokens >= 1.0 && self.bytes.tokens >= len as f64;
        if allowed {
            self.messages.tokens -= 1.0;
            self.bytes.tokens -= len as f64;
        }
        allowed
    }
}

impl Bucket {
    fn new(now: Instant, per_sec: f64) -> Self {
        let capacity = per_sec * BURST_SECONDS;
        Self { per_sec, capacity, tokens: capacity, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.last = self.last.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sustained_rate_passes_and_twice_the_rate_does_not() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(start, 50, 1_000_000);
        let sent_at =
            |i: u32, per_sec: u32| start + Duration::from_secs_f64(f64::from(i) / f64::from(per_sec));
        assert!((0..500).all(|i| limiter.handle_message(sent_at(i, 50), 100)), "10 s at 50/s");

        let mut limiter = RateLimiter::new(start, 50, 1_000_000);
        let refused_at = (0..500).position(|i| !limiter.handle_message(sent_at(i, 100), 100));
        // The 100-message burst lasts while 100 + t*50 >= t*100, that is about 2 s at 100/s.
        let refused_at = refused_at.expect("100/s against 50/s is refused in the end");
        assert!((195..=205).contains(&refused_at), "refused after {refused_at} messages");
    }

    #[test]
    fn bytes_are_limited_too() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(start, 1000, 10_000);
        assert!(limiter.handle_message(start, 20_000));
        assert!(!limiter.handle_message(start, 1));
        assert!(limiter.handle_message(start + Duration::from_millis(100), 1000));
    }
}
