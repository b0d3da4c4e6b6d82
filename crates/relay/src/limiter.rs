//! Per-connection rate limits, as a sans-IO core: two token buckets, one for frames and one
//! for bytes, each refilled at its sustained rate and holding two seconds' worth as burst;
//! and [`FrameMeter`], which finds every WebSocket frame in the bytes a client sends so that
//! each one is counted, whatever it is.

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

/// The longest WebSocket frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_FRAME_HEADER: usize = 14;

/// Counts every WebSocket frame a client sends against a [`RateLimiter`], as the bytes
/// arrive and before the WebSocket library sees them: pings and pongs, and the continuation
/// frames of a message that never ends, which never surface as messages, cost the relay as
/// much as any other frame. Each frame is charged its header and payload as its header ends.
#[derive(Debug)]
pub struct FrameMeter {
    limiter: RateLimiter,
    /// Bytes still to pass before the first frame: the HTTP request that asked for the upgrade.
    skip: usize,
    header: [u8; MAX_FRAME_HEADER],
    header_len: usize,
    payload_left: u64,
}

/// A client sent frames or bytes faster than its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more WebSocket frames or bytes per second than the relay allows")]
pub struct RateExceeded;

impl FrameMeter {
    /// A meter whose frames start after `skip` bytes.
    pub fn new(limiter: RateLimiter, skip: usize) -> Self {
        Self { limiter, skip, header: [0; MAX_FRAME_HEADER], header_len: 0, payload_left: 0 }
    }

    /// Reads `bytes`, which arrived at `now`, charging each frame whose header ends in them.
    /// Once this is an error the connection is to be closed.
    pub fn handle_bytes(&mut self, now: Instant, mut bytes: &[u8]) -> Result<(), RateExceeded> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
            } else if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left).unwrap_or(usize::MAX).min(bytes.len());
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
            } else {
                self.header[self.header_len] = bytes[0];
                self.header_len += 1;
                bytes = &bytes[1..];
                if let Some(payload) = payload_len(&self.header[..self.header_len]) {
                    let frame = (self.header_len as u64).saturating_add(payload);
                    self.header_len = 0;
                    self.payload_left = payload;
                    if !self.limiter.handle_message(now, usize::try_from(frame).unwrap_or(usize::MAX)) {
                        return Err(RateExceeded);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The payload length of the frame whose header is `header`, once it is complete (RFC 6455
/// section 5.2).
fn payload_len(header: &[u8]) -> Option<u64> {
    let second = *header.get(1)?;
    let masked = second & 0x80 != 0;
    let (extended, short) = match second & 0x7f {
        126 => (2, None),
        127 => (8, None),
        len => (0, Some(u64::from(len))),
    };
    if header.len() < 2 + extended + if masked { 4 } else { 0 } {
        return None;
    }
    Some(
        short.unwrap_or_else(|| {
            header[2..2 + extended].iter().fold(0, |len, &byte| len << 8 | u64::from(byte))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A client's frame: masked with a zero key, so the payload reads as sent.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![first];
        match payload.len() {
            len @ 0..=125 => bytes.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                bytes.push(0x80 | 126);
                bytes.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                bytes.push(0x80 | 127);
                bytes.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(payload);
        bytes
    }

    const PING: u8 = 0x89;
    const CONTINUATION: u8 = 0x00;
    const BINARY: u8 = 0x82;

    #[test]
    fn every_frame_counts_pings_and_empty_continuations_included() {
        let start = Instant::now();
        for first in [PING, CONTINUATION] {
            let mut meter = FrameMeter::new(RateLimiter::new(start, 10, 1 << 20), 0);
            let flood = frame(first, b"").repeat(20);
            assert!(meter.handle_bytes(start, &flood).is_ok(), "a burst of twice the rate passes");
            assert_eq!(meter.handle_bytes(start, &frame(first, b"")), Err(RateExceeded));
        }
    }

    #[test]
    fn frames_are_found_however_the_bytes_are_split_and_whatever_their_length() {
        let start = Instant::now();
        let mut stream = Vec::new();
        for len in [0, 1, 125, 126, 300, 0xffff, 0x10000] {
            stream.extend(frame(BINARY, &vec![7; len]));
        }
        for chunk in [1, 3, 7, 1000, stream.len()] {
            // Seven frames, then the eighth of a burst of eight, then one too many: a payload
            // byte taken for a header would have made more frames, a header taken for payload
            // fewer.
            let mut meter = FrameMeter::new(RateLimiter::new(start, 4, 1 << 30), 0);
            for piece in stream.chunks(chunk) {
                meter.handle_bytes(start, piece).unwrap_or_else(|_| panic!("refused with chunks of {chunk}"));
            }
            assert!(meter.handle_bytes(start, &frame(PING, b"")).is_ok(), "chunks of {chunk}");
            assert_eq!(meter.handle_bytes(start, &frame(PING, b"")), Err(RateExceeded), "chunks of {chunk}");
        }
        let mut meter = FrameMeter::new(RateLimiter::new(start, 100, 1000), 0);
        assert!(
            meter.handle_bytes(start, &frame(BINARY, &[0; 1992])).is_ok(),
            "2000 bytes of a burst of 2000"
        );
        assert_eq!(meter.handle_bytes(start, &frame(PING, b"")), Err(RateExceeded), "bytes are charged too");
    }

    #[test]
    fn the_upgrade_request_is_not_a_frame_and_a_huge_length_is_refused() {
        let start = Instant::now();
        let request = b"GET /v1 HTTP/1.1\r\n\r\n";
        let mut bytes = request.to_vec();
        bytes.extend(frame(PING, b"x"));
        let mut meter = FrameMeter::new(RateLimiter::new(start, 1, 1 << 20), request.len());
        assert!(meter.handle_bytes(start, &bytes).is_ok(), "one frame, not dozens of bogus ones");
        assert!(meter.handle_bytes(start, &frame(PING, b"")).is_ok(), "the burst holds a second");
        let mut meter = FrameMeter::new(RateLimiter::new(start, 100, 1 << 20), 0);
        let lie = [0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert_eq!(meter.handle_bytes(start, &lie), Err(RateExceeded));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_in_any_pieces_are_read_without_a_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            chunk in 1usize..64,
        ) {
            let start = Instant::now();
            let mut meter = FrameMeter::new(RateLimiter::new(start, 1000, 1 << 20), 3);
            for piece in bytes.chunks(chunk) {
                let _ = meter.handle_bytes(start, piece);
            }
        }
    }

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
