//! Audio fan-out load against a real `chinwag-relay` process.
//!
//! Starts the relay as its own process on loopback, joins `--rooms` rooms of `--per-room`
//! participants, and has every participant send `--fps` audio frames per second of
//! `--payload` bytes for `--seconds`. Every receiver timestamps what it gets against the
//! capture time the sender wrote (one clock: all clients live in this process), so the delay
//! is the relay's forwarding plus both ends' socket and scheduling time. The same run first
//! measures one room of two participants as the baseline.
//!
//! ```text
//! cargo build --release -p chinwag-relay -p chinwag-e2e
//! target/release/relay-fanout-bench --rooms 20 --per-room 10 --seconds 30
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chinwag_e2e::{RelayProcess, TestClient, http_get, metric, process_clock_us};
use chinwag_proto::{MediaFlags, MediaHeader, MediaKind, MediaTimestamp, ParticipantId, RelayTime, SeqNo};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(about = "Audio fan-out load against a real chinwag-relay process.")]
struct Args {
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    #[arg(long, default_value_t = 10)]
    per_room: usize,
    #[arg(long, default_value_t = 50)]
    fps: u32,
    #[arg(long, default_value_t = 100)]
    payload: usize,
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Seconds of the baseline run (one room of two); 0 skips it.
    #[arg(long, default_value_t = 5.0)]
    baseline_seconds: f64,
    /// Also measure the relay's memory with this many idle joined connections; 0 skips it.
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// The relay binary [default: chinwag-relay next to this program].
    #[arg(long)]
    relay_bin: Option<PathBuf>,
}

/// What one load phase measured.
#[derive(Debug)]
struct Phase {
    clients: usize,
    sent: u64,
    expected: u64,
    received: u64,
    delays_us: Vec<u32>,
    relay_cpu: f64,
    wall: Duration,
    relay_drops: u64,
}

impl Phase {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.delays_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.delays_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.delays_us[index]) / 1000.0
    }

    fn report(&self, name: &str) {
        println!(
            "{name}: {} clients, {} frames sent, {} of {} deliveries ({} missing), relay drops {}, relay CPU {:.1} % of one core over {:.1} s, delay ms p50 {:.3} p99 {:.3} p999 {:.3} max {:.3}",
            self.clients,
            self.sent,
            self.received,
            self.expected,
            self.expected.saturating_sub(self.received),
            self.relay_drops,
            self.relay_cpu * 100.0,
            self.wall.as_secs_f64(),
            self.percentile_ms(0.5),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.percentile_ms(1.0),
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let relay_bin = match args.relay_bin.clone() {
        Some(path) => path,
        None => {
            std::env::current_exe()?.with_file_name(format!("chinwag-relay{}", std::env::consts::EXE_SUFFIX))
        }
    };
    let clients = args.rooms * args.per_room;
    let connections = (clients.max(args.idle_connections) + 16).to_string();
    // Generous per-connection limits: this measures fan-out, not the rate limiter.
    let relay =
        RelayProcess::start(&relay_bin, &["--max-connections", &connections, "--max-participants", "64"])
            .with_context(|| {
                format!(
                    "start {} (build it with cargo build --release -p chinwag-relay)",
                    relay_bin.display()
                )
            })?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        println!(
            "relay {} (pid {}), command: {}",
            relay.url,
            relay.pid(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        let baseline = if args.baseline_seconds > 0.0 {
            let phase = run_phase(&relay, "baseline", 1, 2, &args, args.baseline_seconds).await?;
            phase.report("baseline (1 room x 2)");
            Some(phase)
        } else {
            None
        };
        let load = run_phase(&relay, "load", args.rooms, args.per_room, &args, args.seconds).await?;
        load.report(&format!("load ({} rooms x {})", args.rooms, args.per_room));
        if args.idle_connections > 0 {
            idle_memory(&relay, args.idle_connections).await?;
        }
        if let Some(baseline) = baseline {
            println!(
                "load / baseline: p50 {:.2}x, p99 {:.2}x, p999 {:.2}x; p99 added by load {:.3} ms",
                load.percentile_ms(0.5) / baseline.percentile_ms(0.5),
                load.percentile_ms(0.99) / baseline.percentile_ms(0.99),
                load.percentile_ms(0.999) / baseline.percentile_ms(0.999),
                load.percentile_ms(0.99) - baseline.percentile_ms(0.99),
            );
        }
        anyhow::Ok(())
    })
}

async fn run_phase(
    relay: &RelayProcess,
    tag: &str,
    rooms: usize,
    per_room: usize,
    args: &Args,
    seconds: f64,
) -> anyhow::Result<Phase> {
    let mut joined = Vec::new();
    for room in 0..rooms {
        for member in 0..per_room {
            let (client, _) = TestClient::join(
                &relay.url,
                &format!("{tag}-{room}"),
                &format!("load-{room}-{member}"),
                None,
            )
            .await?;
            joined.push(client);
        }
    }
    // Let the presence messages of the joins settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let drops_before = relay_drops(relay).await?;
    let period = Duration::from_secs_f64(1.0 / f64::from(args.fps));
    let frames_each = (seconds * f64::from(args.fps)).round() as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let cpu_before = relay.cpu_time()?;
    let started = Instant::now();
    let n_clients = joined.len();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (index, client) in joined.into_iter().enumerate() {
        let (mut sink, mut stream) = client.into_inner().split();
        // Stagger the senders over one frame period, as real clients would be.
        let offset = period.mul_f64(index as f64 / n_clients as f64);
        let payload = vec![0x42u8; args.payload];
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
        let stop = Arc::clone(&stop);
        let received = Arc::clone(&received);
        receivers.push(tokio::spawn(async move {
            let mut delays = Vec::with_capacity(frames_each as usize * (per_room - 1));
            loop {
                let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
                match next {
                    Ok(Some(Ok(Message::Binary(frame)))) => {
                        let (header, _) = MediaHeader::decode(&frame)?;
                        let delay = process_clock_us().saturating_sub(header.capture_time.as_micros());
                        delays.push(delay.min(u64::from(u32::MAX)) as u32);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(error))) => bail!("receiver failed: {error}"),
                    Ok(None) => bail!("relay closed a receiver"),
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            anyhow::Ok((delays, stream))
        }));
    }
    let mut sent = 0;
    let mut sinks = Vec::new();
    for sender in senders {
        sinks.push(sender.await??);
        sent += frames_each;
    }
    let wall = started.elapsed();
    let cpu = relay.cpu_time()?.saturating_sub(cpu_before);
    // Give the last frames time to arrive, then stop the receivers.
    let expected = sent * (per_room as u64 - 1);
    let drain_until = Instant::now() + Duration::from_secs(2);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut delays_us = Vec::new();
    let mut streams = Vec::new();
    for receiver in receivers {
        let (delays, stream) = receiver.await??;
        delays_us.extend(delays);
        streams.push(stream);
    }
    delays_us.sort_unstable();
    let relay_drops = relay_drops(relay).await? - drops_before;
    // Dropping both halves closes the connections; the relay cleans up their rooms.
    drop((sinks, streams));
    Ok(Phase {
        clients: n_clients,
        sent,
        expected,
        received: received.load(Ordering::Relaxed),
        delays_us,
        relay_cpu: cpu.as_secs_f64() / wall.as_secs_f64(),
        wall,
        relay_drops,
    })
}

/// Joins `n` clients that then sit idle, and reports what they cost the relay in memory.
async fn idle_memory(relay: &RelayProcess, n: usize) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = relay.rss_kib()?;
    let mut idle = Vec::with_capacity(n);
    for index in 0..n {
        let (client, _) =
            TestClient::join(&relay.url, &format!("idle-{}", index / 10), &format!("idle-{index}"), None)
                .await?;
        idle.push(client);
    }
    // Let the presence messages go out and the queues empty.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = relay.rss_kib()?;
    println!(
        "idle: {n} joined connections cost the relay {} KiB of resident memory, {:.1} KiB each (before {} KiB, after {} KiB)",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / n as f64,
        before,
        after
    );
    drop(idle);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

async fn relay_drops(relay: &RelayProcess) -> anyhow::Result<u64> {
    let (_, text) = http_get(relay.addr, "/metrics").await?;
    Ok(["bad_header", "video_superseded", "video_queue_full", "receiver_too_slow", "receiver_closed"]
        .iter()
        .filter_map(|reason| metric(&text, &format!("chinwag_dropped_frames_total{{reason=\"{reason}\"}}")))
        .sum())
}
