//! Audio load through real relays, shared by the benchmark programs.
//!
//! Clients join rooms on one or more relays; the senders among them send audio frames at a
//! steady rate with the capture time (on [`process_clock_us`]) in the header, and every client
//! reads and timestamps what arrives. One process holds every client, so one clock measures
//! each delivery's delay. Deliveries between clients of the same relay and across relays are
//! kept apart.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use chinwag_proto::{
    MediaFlags, MediaHeader, MediaKind, MediaTimestamp, ParticipantId, RelayTime, SeqNo, ServerMessage,
};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::{TestClient, http_get, process_clock_us, process_cpu_time};

/// One client of a load run.
#[derive(Debug, Clone)]
pub struct Member {
    /// The relay's URL, as [`crate::RelayProcess::url`].
    pub url: String,
    /// Which relay this is, to tell same-relay deliveries from cross-relay ones.
    pub relay: usize,
    pub room: String,
    pub name: String,
    /// Whether it sends audio; every member receives.
    pub sends: bool,
}

/// The traffic each sender makes.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    pub fps: u32,
    pub payload_bytes: usize,
    pub seconds: f64,
}

/// What one load run measured.
#[derive(Debug)]
pub struct LoadResult {
    pub clients: usize,
    /// Frames the senders sent, all together.
    pub sent: u64,
    /// Deliveries a perfect relay would make between clients of the same relay, and across.
    pub expected_local: u64,
    pub expected_cross: u64,
    /// Delays of the deliveries that arrived, in microseconds, sorted.
    pub local_delays_us: Vec<u32>,
    pub cross_delays_us: Vec<u32>,
    /// CPU time each process of `pids` used over the sending window.
    pub cpu: Vec<Duration>,
    /// The sending window: from the first frame until every sender was done.
    pub wall: Duration,
}

impl LoadResult {
    pub fn expected(&self) -> u64 {
        self.expected_local + self.expected_cross
    }

    pub fn received(&self) -> u64 {
        (self.local_delays_us.len() + self.cross_delays_us.len()) as u64
    }

    /// Every delay, local and cross-relay, sorted.
    pub fn all_delays_us(&self) -> Vec<u32> {
        let mut all = [self.local_delays_us.as_slice(), self.cross_delays_us.as_slice()].concat();
        all.sort_unstable();
        all
    }
}

/// The `p` quantile (0 to 1) of sorted microsecond delays, in milliseconds; NaN when empty.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted_us[index]) / 1000.0
}

/// The sum of every sample of a metric family in Prometheus text, labelled or not: e.g.
/// `metric_sum(&text, "chinwag_dropped_frames_total")` adds up every drop reason.
pub fn metric_sum(text: &str, family: &str) -> u64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(family)?;
            let value =
                if rest.starts_with('{') { rest.split_once("} ")?.1 } else { rest.strip_prefix(' ')? };
            value.trim().parse::<u64>().ok()
        })
        .sum()
}

/// The relay's `chinwag_dropped_frames_total`, all reasons together.
pub async fn relay_drops(addr: std::net::SocketAddr) -> anyhow::Result<u64> {
    let (_, text) = http_get(addr, "/metrics").await?;
    Ok(metric_sum(&text, "chinwag_dropped_frames_total"))
}

/// Joins `members`, waits until each has seen the rest of its room, runs `traffic` from the
/// senders, and measures every delivery and the CPU time of `pids` (relays and the like).
/// The clients leave when it returns.
pub async fn run(members: &[Member], traffic: Traffic, pids: &[u32]) -> anyhow::Result<LoadResult> {
    let mut joined = Vec::with_capacity(members.len());
    let mut relay_of: HashMap<(String, ParticipantId), usize> = HashMap::new();
    for member in members {
        let (client, welcome) = TestClient::join(&member.url, &member.room, &member.name, None).await?;
        relay_of.insert((member.room.clone(), welcome.id), member.relay);
        joined.push((client, welcome.peers.len()));
    }
    let mut room_sizes: HashMap<&str, usize> = HashMap::new();
    for member in members {
        *room_sizes.entry(&member.room).or_default() += 1;
    }
    // Presence may cross relays: wait until every client knows its whole room.
    let deadline = Instant::now() + Duration::from_secs(20);
    for ((client, known), member) in joined.iter_mut().zip(members) {
        let others = room_sizes[member.room.as_str()] - 1;
        while *known < others {
            let left = deadline.saturating_duration_since(Instant::now());
            match client.next_control(left).await {
                Ok(ServerMessage::PeerJoined { .. }) => *known += 1,
                Ok(ServerMessage::PeerLeft { .. }) => *known -= 1,
                Ok(_) => {}
                Err(error) => {
                    bail!("{} saw {known} of the {others} others in its room: {error:#}", member.name)
                }
            }
        }
    }
    // Let the last presence messages go out before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (mut expected_local, mut expected_cross) = (0, 0);
    let frames_each = (traffic.seconds * f64::from(traffic.fps)).round() as u64;
    for sender in members.iter().filter(|member| member.sends) {
        for receiver in members.iter().filter(|other| other.room == sender.room) {
            if std::ptr::eq(sender, receiver) {
                continue;
            }
            if receiver.relay == sender.relay {
                expected_local += frames_each;
            } else {
                expected_cross += frames_each;
            }
        }
    }
    let relay_of = Arc::new(relay_of);
    let period = Duration::from_secs_f64(1.0 / f64::from(traffic.fps));
    let n_senders = members.iter().filter(|member| member.sends).count();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let cpu_before = pids.iter().map(|pid| process_cpu_time(*pid)).collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut idle_sinks = Vec::new();
    for ((client, _), member) in joined.into_iter().zip(members) {
        let (mut sink, mut stream) = client.into_inner().split();
        if member.sends {
            // Stagger the senders over one frame period, as real clients would be.
            let offset = period.mul_f64(senders.len() as f64 / n_senders as f64);
            let payload = vec![0x42u8; traffic.payload_bytes];
            senders.push(tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let mut tick = tokio::time::interval(period);
                for seq in 0..frames_each {
                    tick.tick().await;
                    let header = MediaHeader {
                        kind: MediaKind::Audio,
                        flags: MediaFlags::default(),
                        sender: ParticipantId(0),
                        seq: SeqNo(seq as u32),
                        timestamp: MediaTimestamp((seq as u32).wrapping_mul(960)),
                        capture_time: RelayTime::from_micros(process_clock_us()),
                    };
                    sink.send(Message::binary(chinwag_proto::encode_frame(&header, &payload))).await?;
                }
                anyhow::Ok(sink)
            }));
        } else {
            idle_sinks.push(sink);
        }
        let (stop, received, relay_of) = (Arc::clone(&stop), Arc::clone(&received), Arc::clone(&relay_of));
        let (room, relay) = (member.room.clone(), member.relay);
        receivers.push(tokio::spawn(async move {
            let (mut local, mut cross) = (Vec::new(), Vec::new());
            loop {
                let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
                match next {
                    Ok(Some(Ok(Message::Binary(frame)))) => {
                        let (header, _) = MediaHeader::decode(&frame)?;
                        let delay = process_clock_us().saturating_sub(header.capture_time.as_micros());
                        let delay = delay.min(u64::from(u32::MAX)) as u32;
                        match relay_of.get(&(room.clone(), header.sender)) {
                            Some(from) if *from == relay => local.push(delay),
                            _ => cross.push(delay),
                        }
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(error))) => bail!("receiver failed: {error}"),
                    Ok(None) => bail!("relay closed a receiver"),
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            anyhow::Ok((local, cross, stream))
        }));
    }
    let mut sent = 0;
    let mut sinks = Vec::new();
    for sender in senders {
        sinks.push(sender.await??);
        sent += frames_each;
    }
    let wall = started.elapsed();
    let mut cpu = Vec::with_capacity(pids.len());
    for (pid, before) in pids.iter().zip(cpu_before) {
        cpu.push(process_cpu_time(*pid)?.saturating_sub(before));
    }
    // Give the last frames time to arrive, then stop the receivers.
    let expected = expected_local + expected_cross;
    let drain_until = Instant::now() + Duration::from_secs(2);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut local_delays_us, mut cross_delays_us) = (Vec::new(), Vec::new());
    let mut streams = Vec::new();
    for receiver in receivers {
        let (local, cross, stream) = receiver.await??;
        local_delays_us.extend(local);
        cross_delays_us.extend(cross);
        streams.push(stream);
    }
    local_delays_us.sort_unstable();
    cross_delays_us.sort_unstable();
    // Dropping both halves closes the connections; the relays clean up their rooms.
    drop((sinks, idle_sinks, streams));
    Ok(LoadResult {
        clients: members.len(),
        sent,
        expected_local,
        expected_cross,
        local_delays_us,
        cross_delays_us,
        cpu,
        wall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_every_sample_of_one_family_only() {
        let text = "# TYPE chinwag_dropped_frames_total counter\n\
                    chinwag_dropped_frames_total{reason=\"bad_header\"} 2\n\
                    chinwag_dropped_frames_total{reason=\"video_superseded\"} 5\n\
                    chinwag_dropped_frames_total_extra 100\n\
                    chinwag_cluster_dropped_frames_total{reason=\"x\"} 7\n\
                    chinwag_rooms 3\n";
        assert_eq!(metric_sum(text, "chinwag_dropped_frames_total"), 7);
        assert_eq!(metric_sum(text, "chinwag_cluster_dropped_frames_total"), 7);
        assert_eq!(metric_sum(text, "chinwag_rooms"), 3);
        assert_eq!(metric_sum(text, "chinwag_missing"), 0);
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let delays: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&delays, 0.5), 51.0);
        assert_eq!(percentile_ms(&delays, 1.0), 100.0);
        assert!(percentile_ms(&[], 0.5).is_nan());
    }
}
