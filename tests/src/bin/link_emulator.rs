//! The link emulator as a program: a TCP proxy on loopback in front of a relay that makes the
//! way to it look like a home connection, for trying the app or a bot on a slow link by hand.
//!
//! ```text
//! cargo run --release -p chinwag-e2e --bin link-emulator -- --upstream 127.0.0.1:7300 \
//!     --up-kbps 1000 --queue-ms 500 --delay-ms 40 --jitter-ms 10
//! chinwag-bot --server ws://127.0.0.1:PORT ...   # PORT as printed
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use chinwag_e2e::{Direction, LinkConfig, LinkEmulator};
use clap::Parser;

/// Forwards connections to a relay through an emulated link; runs until interrupted.
#[derive(Parser)]
struct Args {
    /// The relay's address.
    #[arg(long)]
    upstream: SocketAddr,
    /// The uplink's cap (towards the relay), in kilobits per second.
    #[arg(long)]
    up_kbps: Option<f64>,
    /// The downlink's cap, in kilobits per second.
    #[arg(long)]
    down_kbps: Option<f64>,
    /// The bottleneck queue in each direction, in milliseconds at the cap.
    #[arg(long, default_value_t = 200)]
    queue_ms: u64,
    /// One-way delay each way.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Random extra delay each way, 0 to this.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let direction = |kbps: Option<f64>| {
        let mut direction = match kbps {
            Some(kbps) => Direction::capped(kbps * 1000.0, Duration::from_millis(args.queue_ms)),
            None => Direction::clean(),
        };
        direction =
            direction.with_delay(Duration::from_millis(args.delay_ms), Duration::from_millis(args.jitter_ms));
        direction
    };
    let config = LinkConfig { up: direction(args.up_kbps), down: direction(args.down_kbps), seed: 1 };
    let link = LinkEmulator::start(args.upstream, config)?;
    println!("link emulator on {} -> {}", link.url(), args.upstream);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
