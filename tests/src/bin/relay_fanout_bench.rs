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
use std::time::Duration;

use anyhow::Context as _;
use chinwag_e2e::load::{self, Member, Traffic, percentile_ms, relay_drops};
use chinwag_e2e::{RelayProcess, TestClient};
use clap::Parser;

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
    load: load::LoadResult,
    relay_drops: u64,
}

impl Phase {
    fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.load.local_delays_us, p)
    }

    fn report(&self, name: &str) {
        let load = &self.load;
        println!(
            "{name}: {} clients, {} frames sent, {} of {} deliveries ({} missing), relay drops {}, relay CPU {:.1} % of one core over {:.1} s, delay ms p50 {:.3} p99 {:.3} p999 {:.3} max {:.3}",
            load.clients,
            load.sent,
            load.received(),
            load.expected(),
            load.expected().saturating_sub(load.received()),
            self.relay_drops,
            load.cpu[0].as_secs_f64() / load.wall.as_secs_f64() * 100.0,
            load.wall.as_secs_f64(),
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
    // Generous limits: this measures fan-out, not the rate limiter, and every client comes
    // from this one machine.
    let unlimited_sources = ["--max-connections-per-source", "0", "--max-handshakes-per-source", "0"];
    let relay_args =
        [&["--max-connections", &connections, "--max-participants", "64"][..], &unlimited_sources].concat();
    let relay = RelayProcess::start(&relay_bin, &relay_args).with_context(|| {
        format!("start {} (build it with cargo build --release -p chinwag-relay)", relay_bin.display())
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
    let mut members = Vec::new();
    for room in 0..rooms {
        for member in 0..per_room {
            members.push(Member {
                url: relay.url.clone(),
                relay: 0,
                room: format!("{tag}-{room}"),
                name: format!("load-{room}-{member}"),
                sends: true,
            });
        }
    }
    let drops_before = relay_drops(relay.addr).await?;
    let traffic = Traffic { fps: args.fps, payload_bytes: args.payload, seconds };
    let load = load::run(&members, traffic, &[relay.pid()]).await?;
    let relay_drops = relay_drops(relay.addr).await? - drops_before;
    Ok(Phase { load, relay_drops })
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
