//! Password guessing, as a sans-IO core: wrong passwords are counted per source address and
//! per room, and past a few of them each further attempt has to wait, longer and longer,
//! until a source or a room is locked out for a while. A refused attempt is refused before
//! its password is looked at, so that waiting out nothing can tell a guess right from wrong.
//!
//! Main type: [`PasswordGuard`]. It reads no clock: callers pass `now`.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::sources::Source;

/// How one kind of key (a source, a room) is slowed down and locked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wrong passwords that cost nothing: people mistype.
    pub free: u32,
    /// The wait after the first wrong password past the free ones; each further one doubles
    /// it, up to `max_wait`.
    pub first_wait: Duration,
    pub max_wait: Duration,
    /// After this many wrong passwords the key is locked out for `lockout`.
    pub lock_after: u32,
    pub lockout: Duration,
    /// Wrong passwords are forgotten after this long without another.
    pub forget_after: Duration,
}

impl Backoff {
    /// One source: five free guesses, then a wait of 1 s doubling up to a minute, and after
    /// 20 wrong passwords a quarter of an hour locked out: about 20 guesses per 20 minutes.
    pub const SOURCE: Backoff = Backoff {
        free: 5,
        first_wait: Duration::from_secs(1),
        max_wait: Duration::from_secs(60),
        lock_after: 20,
        lockout: Duration::from_secs(15 * 60),
        forget_after: Duration::from_secs(15 * 60),
    };

    /// One room, guessed at from many sources: more free guesses than one source may ever
    /// make, so that one guesser never slows the room for everyone; then waits up to 30 s, and
    /// ten minutes locked out after 200.
    pub const ROOM: Backoff = Backoff {
        free: 30,
        first_wait: Duration::from_secs(1),
        max_wait: Duration::from_secs(30),
        lock_after: 200,
        lockout: Duration::from_secs(10 * 60),
        forget_after: Duration::from_secs(15 * 60),
    };

    /// How long the key waits after its `failures`-th wrong password.
    fn wait_after(&self, failures: u32) -> Duration {
        if failures >= self.lock_after {
            return self.lockout;
        }
        let Some(past_free) = failures.checked_sub(self.free).filter(|&past| past > 0) else {
            return Duration::ZERO;
        };
        let doublings = (past_free - 1).min(31);
        self.first_wait.saturating_mul(1 << doublings).min(self.max_wait)
    }
}

/// Why a join may not try a password now, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    /// Too many wrong passwords from this source.
    Source { retry_after: Duration },
    /// Too many wrong passwords for this room, from anywhere.
    Room { retry_after: Duration },
}

impl Locked {
    pub fn retry_after(self) -> Duration {
        match self {
            Locked::Source { retry_after } | Locked::Room { retry_after } => retry_after,
        }
    }
}

/// Wrong passwords per source and per room.
#[derive(Debug)]
pub struct PasswordGuard {
    sources: Ledger<Source>,
    rooms: Ledger<String>,
}

impl Default for PasswordGuard {
    fn default() -> Self {
        Self::new(Backoff::SOURCE, Backoff::ROOM)
    }
}

/// How many keys of each kind are remembered at most: past it, a new key is not tracked
/// until old ones are forgotten (a new source is then judged by its room's count alone).
const MAX_KEYS: usize = 100_000;

impl PasswordGuard {
    pub fn new(sources: Backoff, rooms: Backoff) -> Self {
        Self { sources: Ledger::new(sources), rooms: Ledger::new(rooms) }
    }

    /// Whether a join from `source` into `room` may try its password at `now`.
    pub fn handle_attempt(&self, now: Instant, source: Source, room: &str) -> Result<(), Locked> {
        if let Some(retry_after) = self.sources.waiting(now, &source) {
            return Err(Locked::Source { retry_after });
        }
        if let Some(retry_after) = self.rooms.waiting(now, room) {
            return Err(Locked::Room { retry_after });
        }
        Ok(())
    }

    /// A join from `source` into `room` gave the wrong password at `now`.
    pub fn handle_wrong_password(&mut self, now: Instant, source: Source, room: &str) {
        self.sources.handle_failure(now, source);
        self.rooms.handle_failure(now, room.to_owned());
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Instant,
}

#[derive(Debug)]
struct Ledger<K> {
    backoff: Backoff,
    records: HashMap<K, Record>,
}

impl<K: Hash + Eq> Ledger<K> {
    fn new(backoff: Backoff) -> Self {
        Self { backoff, records: HashMap::new() }
    }

    fn waiting<Q>(&self, now: Instant, key: &Q) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let record = self.records.get(key)?;
        let left = record.blocked_until.saturating_duration_since(now);
        (left > Duration::ZERO).then_some(left)
    }

    fn handle_failure(&mut self, now: Instant, key: K) {
        if self.records.len() >= MAX_KEYS && !self.records.contains_key(&key) {
            self.forget_old(now);
            if self.records.len() >= MAX_KEYS {
                return;
            }
        }
        let record = self.records.entry(key).or_insert(Record { failures: 0, last: now, blocked_until: now });
        if now.saturating_duration_since(record.last) > self.backoff.forget_after {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last = now;
        record.blocked_until = now + self.backoff.wait_after(record.failures);
    }

    /// Drops the keys whose wrong passwords are forgotten and that wait for nothing.
    fn forget_old(&mut self, now: Instant) {
        let forget_after = self.backoff.forget_after;
        self.records.retain(|_, record| {
            record.blocked_until > now || now.saturating_duration_since(record.last) <= forget_after
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(n: u8) -> Source {
        Source::of(std::net::IpAddr::from([10, 0, 0, n]))
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn waits_double_past_the_free_guesses_then_lock_out() {
        let backoff = Backoff::SOURCE;
        let waits: Vec<u64> = (1..=21).map(|n| backoff.wait_after(n).as_secs()).collect();
        assert_eq!(waits[..5], [0; 5], "five free");
        assert_eq!(waits[5..12], [1, 2, 4, 8, 16, 32, 60]);
        assert_eq!(waits[18], 60);
        assert_eq!(waits[19..], [900, 900], "locked out from the 20th");
        assert_eq!(backoff.wait_after(u32::MAX), backoff.lockout);
    }

    #[test]
    fn a_guesser_is_slowed_then_locked_out_and_others_are_not() {
        let start = Instant::now();
        let mut guard = PasswordGuard::default();
        let (guesser, honest) = (source(1), source(2));
        for _ in 0..5 {
            assert!(guard.handle_attempt(start, guesser, "r").is_ok());
            guard.handle_wrong_password(start, guesser, "r");
        }
        assert!(guard.handle_attempt(start, guesser, "r").is_ok(), "mistakes cost nothing at first");
        guard.handle_wrong_password(start, guesser, "r");
        assert_eq!(guard.handle_attempt(start, guesser, "r"), Err(Locked::Source { retry_after: SECOND }));
        assert_eq!(
            guard.handle_attempt(start, guesser, "elsewhere"),
            Err(Locked::Source { retry_after: SECOND }),
            "a source waits whichever room it tries"
        );
        assert!(guard.handle_attempt(start, honest, "r").is_ok(), "others are not slowed");
        assert!(guard.handle_attempt(start + SECOND, guesser, "r").is_ok(), "the wait ends");

        // Wrong passwords 7 to 19, each wait waited out, then the 20th.
        let mut now = start + SECOND;
        for _ in 7..20 {
            guard.handle_wrong_password(now, guesser, "r");
            now += guard.handle_attempt(now, guesser, "r").err().map_or(Duration::ZERO, Locked::retry_after);
        }
        guard.handle_wrong_password(now, guesser, "r");
        let locked = guard.handle_attempt(now, guesser, "r");
        assert_eq!(locked, Err(Locked::Source { retry_after: 15 * 60 * SECOND }));
        assert!(guard.handle_attempt(now, honest, "r").is_ok(), "one guesser never locks the room");
    }

    #[test]
    fn a_room_guessed_at_from_many_sources_is_slowed_for_every_source() {
        let start = Instant::now();
        let mut guard = PasswordGuard::default();
        for n in 0..30 {
            guard.handle_wrong_password(start, source(n / 5), "r");
        }
        assert!(guard.handle_attempt(start, source(100), "r").is_ok());
        guard.handle_wrong_password(start, source(7), "r");
        assert_eq!(guard.handle_attempt(start, source(100), "r"), Err(Locked::Room { retry_after: SECOND }));
        assert!(guard.handle_attempt(start, source(100), "other").is_ok());
    }

    #[test]
    fn wrong_passwords_are_forgotten_after_a_quiet_while() {
        let start = Instant::now();
        let mut guard = PasswordGuard::default();
        for _ in 0..6 {
            guard.handle_wrong_password(start, source(1), "r");
        }
        let later = start + Duration::from_secs(16 * 60);
        guard.handle_wrong_password(later, source(1), "r");
        assert!(guard.handle_attempt(later, source(1), "r").is_ok(), "counted afresh");
    }

    #[test]
    fn the_ledgers_stay_bounded() {
        let start = Instant::now();
        let mut ledger = Ledger::new(Backoff::SOURCE);
        for n in 0..(MAX_KEYS as u32 + 10) {
            ledger.handle_failure(start, n);
        }
        assert_eq!(ledger.records.len(), MAX_KEYS);
        let later = start + Duration::from_secs(16 * 60);
        ledger.handle_failure(later, u32::MAX);
        assert_eq!(ledger.records.len(), 1, "old keys were forgotten to make room");
    }
}
