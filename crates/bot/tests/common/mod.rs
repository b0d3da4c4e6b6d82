//! What the bot's end-to-end tests share: starting relays and bots, reading their stats.

// Each test binary that includes this module uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chinwag_e2e::audio::peer_stats;
use chinwag_e2e::{RelayProcess, http_get, metric, workspace_binary};
use serde_json::Value;

pub const BOT: &str = env!("CARGO_BIN_EXE_chinwag-bot");

pub fn relay(args: &[&str]) -> RelayProcess {
    RelayProcess::start(&workspace_binary("chinwag-relay"), args).expect("relay starts")
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chinwag-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts a bot named `name` in room "r" on `server`, with `extra` flags.
pub fn spawn_bot(server: &str, name: &str, extra: &[&str], env: &[(String, String)]) -> Child {
    Command::new(BOT)
        .args(["--server", server, "--room", "r", "--name", name])
        .args(extra)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bot starts")
}

pub fn finish(bot: Child) -> Output {
    let output = bot.wait_with_output().unwrap();
    eprintln!("bot: {}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    output
}

pub fn stats(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Waits until the relay has `n` participants.
pub fn wait_for_participants(relay: &RelayProcess, n: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = runtime.block_on(http_get(relay.addr, "/metrics")).unwrap();
        if metric(&text, "chinwag_participants") == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "the relay never had {n} participants");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn peer<'a>(stats: &'a Value, name: &str) -> &'a Value {
    peer_stats(stats, name).expect("peer in stats")
}

/// Asserts that `jpeg` is the 320×240 test pattern: seven bars across the top two-thirds.
pub fn assert_pattern_bars(jpeg: &[u8], what: &str) {
    let frame = chinwag_codec::JpegDecoder::default().decode(jpeg).unwrap();
    assert_eq!((frame.width, frame.height), (320, 240), "{what}");
    for (index, expected) in chinwag_capture::PATTERN_BARS.iter().enumerate() {
        let x = (index as u32 * 2 + 1) * frame.width / 14;
        for y in [frame.height / 6, frame.height / 3, frame.height / 2] {
            let got = frame.pixel(x, y).unwrap();
            let close = got.iter().zip(expected).all(|(g, e)| g.abs_diff(*e) <= 40);
            assert!(close, "{what}: bar {index} at ({x}, {y}): {got:?}, expected {expected:?}");
        }
    }
}
