//! Which relays are alive, from their heartbeats, as a sans-IO core.
//!
//! A relay is alive while its heartbeats keep coming: one silent for `dead_after` is dead.
//! Right after this relay (re)connects it has heard from nobody yet, so for `dead_after` it
//! takes every relay it has not heard from to be alive, and gives the ones it knew a fresh
//! start; while its own link is down it declares nobody dead (it would be its own fault).

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Liveness {
    me: String,
    dead_after: Duration,
    seen: HashMap<String, Instant>,
    /// When this relay last (re)connected.
    since: Instant,
}

/// What a heartbeat told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A relay heard from for the first time, or again after it was taken for dead.
    New,
    Known,
}

impl Liveness {
    pub fn new(me: &str, dead_after: Duration, now: Instant) -> Self {
        Self { me: me.to_owned(), dead_after, seen: HashMap::new(), since: now }
    }

    pub fn handle_heartbeat(&mut self, now: Instant, node: &str) -> Heard {
        if node == self.me {
            return Heard::Known;
        }
        match self.seen.insert(node.to_owned(), now) {
            None => Heard::New,
            Some(_) => Heard::Known,
        }
    }

    /// A relay said goodbye: it is gone now rather than after `dead_after`.
    pub fn handle_goodbye(&mut self, node: &str) -> bool {
        self.seen.remove(node).is_some()
    }

    /// This relay's link came back.
    pub fn reconnected(&mut self, now: Instant) {
        self.since = now;
        for last in self.seen.values_mut() {
            *last = now;
        }
    }

    /// The relays that fell silent since the last call; they are forgotten.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let dead_after = self.dead_after;
        let mut dead = Vec::new();
        self.seen.retain(|node, last| {
            let alive = now.saturating_duration_since(*last) < dead_after;
            if !alive {
                dead.push(node.clone());
            }
            alive
        });
        dead
    }

    /// Who is alive now, to decide with after the lock on this is gone.
    pub fn snapshot(&self, now: Instant) -> AliveNodes {
        AliveNodes {
            me: self.me.clone(),
            seen: self.seen.keys().cloned().collect(),
            grace: now.saturating_duration_since(self.since) < self.dead_after,
        }
    }

    /// Live relays, this one included.
    pub fn alive_count(&self) -> usize {
        self.seen.len() + 1
    }
}

/// Who is alive at one moment: this relay, relays heard from, and (during the grace after
/// connecting) relays not heard from yet.
#[derive(Debug, Clone)]
pub struct AliveNodes {
    me: String,
    seen: std::collections::HashSet<String>,
    grace: bool,
}

impl AliveNodes {
    pub fn is_alive(&self, node: &str) -> bool {
        node == self.me || self.seen.contains(node) || self.grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn silence_for_dead_after_is_death() {
        let t0 = Instant::now();
        let mut liveness = Liveness::new("me", 3 * S, t0);
        assert_eq!(liveness.handle_heartbeat(t0, "b"), Heard::New);
        assert_eq!(liveness.handle_heartbeat(t0 + S, "b"), Heard::Known);
        assert_eq!(liveness.handle_heartbeat(t0 + S, "c"), Heard::New);
        assert_eq!(liveness.alive_count(), 3);
        liveness.handle_heartbeat(t0 + 3 * S, "c");
        assert!(liveness.expire(t0 + 3 * S).is_empty());
        assert_eq!(liveness.expire(t0 + 4 * S), vec!["b".to_owned()]);
        assert!(!liveness.snapshot(t0 + 4 * S).is_alive("b"));
        assert!(
            liveness.snapshot(t0 + 4 * S).is_alive("c") && liveness.snapshot(t0 + 100 * S).is_alive("me")
        );
        assert_eq!(liveness.handle_heartbeat(t0 + 5 * S, "b"), Heard::New, "back from the dead");
    }

    #[test]
    fn unknown_relays_count_as_alive_only_just_after_connecting() {
        let t0 = Instant::now();
        let liveness = Liveness::new("me", 3 * S, t0);
        assert!(liveness.snapshot(t0 + S).is_alive("never-heard"));
        assert!(!liveness.snapshot(t0 + 3 * S).is_alive("never-heard"));
        assert!(liveness.snapshot(t0 + 3 * S).is_alive("me"));
    }

    #[test]
    fn a_reconnect_gives_everyone_a_fresh_start() {
        let t0 = Instant::now();
        let mut liveness = Liveness::new("me", 3 * S, t0);
        liveness.handle_heartbeat(t0, "b");
        liveness.reconnected(t0 + 10 * S);
        assert!(liveness.expire(t0 + 12 * S).is_empty());
        assert_eq!(liveness.expire(t0 + 13 * S), vec!["b".to_owned()]);
    }

    #[test]
    fn goodbye_is_immediate() {
        let t0 = Instant::now();
        let mut liveness = Liveness::new("me", 3 * S, t0);
        liveness.handle_heartbeat(t0, "b");
        assert!(liveness.handle_goodbye("b"));
        assert!(!liveness.handle_goodbye("b"));
        assert_eq!(liveness.alive_count(), 1);
    }
}
