//! A virtual-time simulator for the jitter buffer: a sender producing one packet per frame, a
//! seeded network model that delays, stalls, reorders and duplicates them, and a receiver that
//! hands packets to the buffer at their arrival instants and polls it once per frame period.
//!
//! Nothing here reads a clock: `Instant::now()` is taken once as an arbitrary origin and every
//! other instant is that origin plus a computed offset.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chinwag_jitter::sim::{Deliveries, Network};
use chinwag_jitter::{JitterBuffer, JitterConfig, JitterStats, PacketFlags, Playout};
use chinwag_proto::{MediaTimestamp, SeqNo};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const FRAME: Duration = Duration::from_millis(20);
const FRAME_TICKS: u32 = 960;

pub use chinwag_jitter::sim::Stalls;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub seed: u64,
    /// How long the sender sends; the receiver polls for two seconds more so that everything
    /// sent is delivered and decided.
    pub duration: Duration,
    pub first_seq: u32,
    pub first_ts: u32,
    /// The fastest path through the network.
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
    /// Sender clock error: at +200 the sender's 20 ms frames come every 20.004 ms of receiver
    /// time.
    pub drift_ppm: f64,
    /// When the sender restarts its stream with a fresh random sequence number and timestamp,
    /// and whether it flags the first packet of the new stream.
    pub restart: Option<(Duration, bool)>,
    /// Offset of the receiver's polls from the sender's frame boundaries.
    pub poll_phase: Duration,
    pub config: JitterConfig,
}

impl Scenario {
    pub fn new(name: &'static str, seed: u64) -> Self {
        Self {
            name,
            seed,
            duration: Duration::from_secs(60),
            first_seq: 1000,
            first_ts: 48_000,
            base_latency: Duration::from_millis(30),
            jitter: Duration::ZERO,
            in_order: true,
            stalls: None,
            swap_probability: 0.0,
            loss_probability: 0.0,
            duplicate_probability: 0.0,
            drift_ppm: 0.0,
            restart: None,
            poll_phase: Duration::from_millis(7),
            config: JitterConfig::default(),
        }
    }
}

/// One packet as sent.
#[derive(Debug, Clone)]
struct Sent {
    at: Duration,
    seq: SeqNo,
    timestamp: MediaTimestamp,
    restart: bool,
}

/// What the receiver got from one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Frame,
    Fec,
    Conceal,
    Silence,
}

#[derive(Debug, Clone)]
pub struct PollRecord {
    pub at: Duration,
    pub kind: Kind,
    /// For a frame played: how long after it was sent it played, minus the fastest path.
    /// This is the delay the buffer adds to mouth-to-ear, measured from outside it.
    pub added_delay: Option<Duration>,
    pub target: Duration,
    pub buffered: Duration,
}

#[derive(Debug)]
pub struct Run {
    pub scenario: Scenario,
    pub polls: Vec<PollRecord>,
    pub stalls: Vec<(Duration, Duration)>,
    pub n_sent: u64,
    pub n_delivered: u64,
    pub n_copies: u64,
    /// Distinct packets delivered.
    pub n_unique: u64,
    pub stats: JitterStats,
    /// Index into `polls` of the first frame played.
    pub first_played: usize,
}

pub fn run(scenario: Scenario) -> Run {
    run_with(scenario, |_, _| {})
}

/// Runs `scenario`, calling `inspect` after every poll.
pub fn run_with(scenario: Scenario, mut inspect: impl FnMut(Duration, &JitterBuffer)) -> Run {
    let mut rng = SmallRng::seed_from_u64(scenario.seed);
    let sent = send(&scenario, &mut rng);
    let network = Network {
        base_latency: scenario.base_latency,
        jitter: scenario.jitter,
        in_order: scenario.in_order,
        stalls: scenario.stalls,
        swap_probability: scenario.swap_probability,
        loss_probability: scenario.loss_probability,
        duplicate_probability: scenario.duplicate_probability,
    };
    let sent_at: Vec<Duration> = sent.iter().map(|packet| packet.at).collect();
    let Deliveries { arrivals: deliveries, stalls } = network.deliver(&sent_at, scenario.duration, &mut rng);
    let n_copies =
        deliveries.len() as u64 - deliveries.iter().map(|&(_, idx)| idx).collect::<HashSet<_>>().len() as u64;
    let n_unique = deliveries.len() as u64 - n_copies;

    let origin = Instant::now();
    let mut buffer = JitterBuffer::new(scenario.config.clone()).expect("scenario config is valid");
    let mut polls = Vec::new();
    let mut next_delivery = 0;
    let mut played = vec![false; sent.len()];
    let mut last_played: Option<usize> = None;
    let end = scenario.duration + Duration::from_secs(2);
    let mut poll_at = scenario.poll_phase;
    while poll_at < end {
        while let Some(&(at, idx)) = deliveries.get(next_delivery).filter(|(at, _)| *at <= poll_at) {
            let packet = &sent[idx];
            let payload = (idx as u64).to_be_bytes().to_vec();
            let flags = PacketFlags { restart: packet.restart, silent: false };
            buffer.handle_packet(origin + at, packet.seq, packet.timestamp, flags, payload);
            next_delivery += 1;
        }
        let playout = buffer.poll_playout(origin + poll_at);
        let stats = buffer.stats();
        // A frame played time-compressed lasts a quarter less (a 5 ms pitch period out of a
        // 20 ms frame): the next poll comes that much sooner.
        let mut period = FRAME;
        let (kind, added_delay) = match playout {
            Playout::Frame { seq, timestamp, payload, accelerate } => {
                if accelerate {
                    period = FRAME * 3 / 4;
                }
                let idx = u64::from_be_bytes(payload.try_into().expect("payloads are 8 bytes")) as usize;
                let packet = &sent[idx];
                assert_eq!(
                    (seq, timestamp),
                    (packet.seq, packet.timestamp),
                    "played frame matches its payload"
                );
                assert!(!played[idx], "packet {idx} played twice");
                played[idx] = true;
                if let Some(last) = last_played {
                    assert!(last < idx, "frames play in order: {idx} after {last}");
                }
                last_played = Some(idx);
                let delay = poll_at - packet.at - scenario.base_latency;
                (Kind::Frame, Some(delay))
            }
            Playout::RecoverWithFec { seq, next_payload, .. } => {
                let idx = u64::from_be_bytes(next_payload.try_into().expect("payloads are 8 bytes")) as usize;
                assert_eq!(sent[idx].seq, seq.next(), "FEC comes from the frame after the missing one");
                (Kind::Fec, None)
            }
            Playout::Conceal { .. } => (Kind::Conceal, None),
            Playout::Silence => (Kind::Silence, None),
        };
        polls.push(PollRecord {
            at: poll_at,
            kind,
            added_delay,
            target: stats.target_delay,
            buffered: stats.buffered,
        });
        inspect(poll_at, &buffer);
        poll_at += period;
    }
    assert_eq!(next_delivery, deliveries.len(), "everything sent was delivered before the end");
    let first_played = polls.iter().position(|p| p.kind == Kind::Frame).unwrap_or(polls.len());
    Run {
        scenario,
        polls,
        stalls,
        n_sent: sent.len() as u64,
        n_delivered: deliveries.len() as u64,
        n_copies,
        n_unique,
        stats: buffer.stats(),
        first_played,
    }
}

fn send(scenario: &Scenario, rng: &mut SmallRng) -> Vec<Sent> {
    let interval = FRAME.as_secs_f64() * (1.0 + scenario.drift_ppm * 1e-6);
    let mut seq = SeqNo(scenario.first_seq);
    let mut timestamp = MediaTimestamp(scenario.first_ts);
    let mut restart_pending = scenario.restart;
    let mut sent = Vec::new();
    for idx in 0.. {
        let at = Duration::from_secs_f64(idx as f64 * interval);
        if at >= scenario.duration {
            break;
        }
        let mut restart = false;
        if let Some((restart_at, flagged)) = restart_pending.filter(|(restart_at, _)| at >= *restart_at) {
            debug_assert!(at >= restart_at);
            seq = SeqNo(rng.random());
            timestamp = MediaTimestamp(rng.random());
            restart = flagged;
            restart_pending = None;
        }
        sent.push(Sent { at, seq, timestamp, restart });
        seq = seq.next();
        timestamp = timestamp.add_ticks(FRAME_TICKS);
    }
    sent
}

/// Figures a user would notice, over the polls from the first frame played on.
#[derive(Debug, Clone)]
pub struct Summary {
    pub delay_p50: Duration,
    pub delay_p95: Duration,
    pub delay_max: Duration,
    /// The buffer's own gauge of media held, sampled after each poll.
    pub buffered_p95: Duration,
    /// Concealed polls per poll since playback started.
    pub conceal_share: f64,
    pub fec_share: f64,
    pub concealed: usize,
    pub recovered: usize,
    pub silence_polls: usize,
}

impl Run {
    /// The polls from the first frame played until the sender stopped.
    pub fn playing(&self) -> &[PollRecord] {
        let end = self.polls.partition_point(|p| p.at < self.scenario.duration);
        &self.polls[self.first_played.min(end)..end]
    }

    pub fn summary(&self) -> Summary {
        self.summary_of(self.playing())
    }

    pub fn summary_of(&self, polls: &[PollRecord]) -> Summary {
        let mut delays: Vec<Duration> = polls.iter().filter_map(|p| p.added_delay).collect();
        delays.sort();
        let mut buffered: Vec<Duration> = polls.iter().map(|p| p.buffered).collect();
        buffered.sort();
        let count = |kind| polls.iter().filter(|p| p.kind == kind).count();
        let share = |kind| count(kind) as f64 / polls.len().max(1) as f64;
        Summary {
            delay_p50: percentile(&delays, 0.50),
            delay_p95: percentile(&delays, 0.95),
            delay_max: delays.last().copied().unwrap_or_default(),
            buffered_p95: percentile(&buffered, 0.95),
            conceal_share: share(Kind::Conceal),
            fec_share: share(Kind::Fec),
            concealed: count(Kind::Conceal),
            recovered: count(Kind::Fec),
            silence_polls: count(Kind::Silence),
        }
    }

    /// Checks that every packet is accounted for, in the buffer's counters and against what
    /// the receiver saw.
    pub fn check_accounting(&self) {
        let s = &self.stats;
        let count = |kind| self.polls.iter().filter(|p| p.kind == kind).count() as u64;
        assert_eq!(s.packets_received, self.n_delivered, "every delivery is counted");
        assert_eq!(
            s.packets_received,
            s.duplicates
                + s.packets_late
                + s.packets_flushed
                + s.frames_dropped
                + s.frames_played
                + s.packets_buffered,
            "every packet is a duplicate, late, flushed, dropped, played or still buffered: {s:?}"
        );
        assert_eq!(s.frames_played, count(Kind::Frame));
        assert_eq!(s.fec_recovered, count(Kind::Fec));
        assert_eq!(s.frames_concealed, count(Kind::Conceal));
        assert_eq!(s.packets_buffered, 0, "the run ends with two seconds of polls and nothing in flight");
        assert_eq!(s.duplicates, self.n_copies, "every extra copy and nothing else is a duplicate");
        assert_eq!(
            s.packets_lost,
            self.n_sent - self.n_unique,
            "exactly the packets never delivered are lost (late ones are late, not lost)"
        );
    }

    /// For each stall: how long after it ended the added delay of the frames played first came
    /// back within target + one frame. `None` if it never did before the next stall.
    pub fn recoveries(&self) -> Vec<Option<Duration>> {
        self.stalls
            .iter()
            .enumerate()
            .map(|(idx, &(_, end))| {
                let next_start = self.stalls.get(idx + 1).map_or(Duration::MAX, |s| s.0);
                self.polls
                    .iter()
                    .filter(|p| p.at >= end && p.at < next_start)
                    .find(|p| p.added_delay.is_some_and(|delay| delay <= p.target + FRAME))
                    .map(|p| p.at - end)
            })
            .collect()
    }

    /// Polls during a stall or the frame after it ends, and the others (from playback start).
    pub fn split_by_stalls(&self) -> (Vec<PollRecord>, Vec<PollRecord>) {
        self.playing()
            .iter()
            .cloned()
            .partition(|p| self.stalls.iter().any(|&(start, end)| p.at >= start && p.at < end + FRAME))
    }

    pub fn report(&self, extra: &str) {
        let summary = self.summary();
        let s = &self.stats;
        eprintln!(
            "{:<22} delay p50 {:>5.1} ms p95 {:>5.1} ms max {:>5.1} ms | buffered p95 {:>5.1} ms | conceal {:>5.2}% fec {:>4.2}% silence {} | \
             target {:>4.0} ms | dropped {} late {} dup {} flushed {} resets {}{}",
            self.scenario.name,
            ms(summary.delay_p50),
            ms(summary.delay_p95),
            ms(summary.delay_max),
            ms(summary.buffered_p95),
            100.0 * summary.conceal_share,
            100.0 * summary.fec_share,
            summary.silence_polls,
            ms(s.target_delay),
            s.frames_dropped,
            s.packets_late,
            s.duplicates,
            s.packets_flushed,
            s.resets,
            extra,
        );
    }
}

pub fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * quantile).round() as usize;
    sorted[idx]
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
