//! Per-source connection limits, as a sans-IO core: how many connections each source holds
//! open, and how many of them have not joined yet (handshakes: TCP, TLS, HTTP and `join`), so
//! that one machine cannot hold the relay at its connection limit and keep everyone else out.
//!
//! A source is an IPv4 address, or an IPv6 /64: one IPv6 host is commonly given a whole /64,
//! so its single addresses are not worth telling apart.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// How much one source may hold; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// Open connections, joined or not.
    pub connections: Option<usize>,
    /// Connections that have not joined yet.
    pub handshakes: Option<usize>,
}

/// Why a new connection from a source was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRefusal {
    TooManyConnections { max: usize },
    TooManyHandshakes { max: usize },
}

/// A source, as counted: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Count {
    open: usize,
    handshaking: usize,
}

/// The connections every source holds.
///
/// **Invariant:** a source is listed exactly while it has an open connection.
#[derive(Debug)]
pub struct Sources {
    limits: SourceLimits,
    counts: HashMap<Source, Count>,
}

impl Sources {
    pub fn new(limits: SourceLimits) -> Self {
        Self { limits, counts: HashMap::new() }
    }

    /// A new connection from `source`, handshaking until [`Sources::handle_joined`].
    pub fn handle_open(&mut self, source: Source) -> Result<(), SourceRefusal> {
        let count = self.counts.get(&source).copied().unwrap_or_default();
        if let Some(max) = self.limits.connections.filter(|&max| count.open >= max) {
            return Err(SourceRefusal::TooManyConnections { max });
        }
        if let Some(max) = self.limits.handshakes.filter(|&max| count.handshaking >= max) {
            return Err(SourceRefusal::TooManyHandshakes { max });
        }
        let count = self.counts.entry(source).or_default();
        count.open += 1;
        count.handshaking += 1;
        Ok(())
    }

    /// A connection from `source` finished its handshake (it joined).
    pub fn handle_joined(&mut self, source: Source) {
        if let Some(count) = self.counts.get_mut(&source) {
            count.handshaking = count.handshaking.saturating_sub(1);
        }
    }

    /// A connection from `source` closed; `handshaking` if it never joined.
    pub fn handle_closed(&mut self, source: Source, handshaking: bool) {
        let Some(count) = self.counts.get_mut(&source) else { return };
        count.open = count.open.saturating_sub(1);
        if handshaking {
            count.handshaking = count.handshaking.saturating_sub(1);
        }
        if count.open == 0 {
            self.counts.remove(&source);
        }
    }

    /// How many sources hold connections.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(addr: &str) -> Source {
        Source::of(addr.parse().unwrap())
    }

    const LIMITS: SourceLimits = SourceLimits { connections: Some(3), handshakes: Some(2) };

    #[test]
    fn one_source_holds_at_most_its_share_and_others_are_untouched() {
        let mut sources = Sources::new(LIMITS);
        let (a, b) = (source("10.0.0.1"), source("10.0.0.2"));
        sources.handle_open(a).unwrap();
        sources.handle_open(a).unwrap();
        assert_eq!(sources.handle_open(a), Err(SourceRefusal::TooManyHandshakes { max: 2 }));
        assert!(sources.handle_open(b).is_ok(), "another source is not affected");
        sources.handle_joined(a);
        sources.handle_open(a).unwrap();
        sources.handle_joined(a);
        assert_eq!(sources.handle_open(a), Err(SourceRefusal::TooManyConnections { max: 3 }));
        sources.handle_closed(a, false);
        assert!(sources.handle_open(a).is_ok(), "a closed connection frees its place");
    }

    #[test]
    fn sources_are_forgotten_when_their_last_connection_closes() {
        let mut sources = Sources::new(LIMITS);
        let a = source("10.0.0.1");
        sources.handle_open(a).unwrap();
        sources.handle_open(a).unwrap();
        sources.handle_joined(a);
        sources.handle_closed(a, false);
        sources.handle_closed(a, true);
        assert!(sources.is_empty());
        sources.handle_closed(a, true);
        assert!(sources.is_empty(), "closing twice is harmless");
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_mapped_ipv4_is_ipv4() {
        assert_eq!(source("2001:db8:1:2:aaaa::1"), source("2001:db8:1:2:bbbb::2"));
        assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
        assert_eq!(source("::ffff:10.0.0.1"), source("10.0.0.1"));
        assert_eq!(source("2001:db8:1:2:aaaa::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn no_limits_means_none() {
        let mut sources = Sources::new(SourceLimits { connections: None, handshakes: None });
        let a = source("10.0.0.1");
        assert!((0..10_000).all(|_| sources.handle_open(a).is_ok()));
    }
}
