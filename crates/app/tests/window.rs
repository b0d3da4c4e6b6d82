//! The real window under Xvfb, with sound to a private PulseAudio null sink: what a person sees
//! and hears when they run `chinwag --demo`.

#![cfg(target_os = "linux")]

use std::process::{Command, Stdio};
use std::time::Duration;

use chinwag_capture::PATTERN_BARS;
use chinwag_e2e::audio::{PulseServer, tone_amplitude};
use chinwag_e2e::display::{Screenshot, Xvfb};

/// Finds, on some row, the seven bars of the test pattern left to right: runs of each bar's
/// colour at least `min_width` pixels wide, in order. Returns the row and the bars' x ranges.
fn find_pattern(shot: &Screenshot, min_width: u32) -> Option<(u32, Vec<(u32, u32)>)> {
    // Classify by which channels are lit rather than by exact values: the window may draw the
    // video a little dimmer or brighter than it was sent.
    let lit = |rgb: [u8; 3]| {
        let max = *rgb.iter().max().expect("three channels");
        (max > 100).then(|| rgb.map(|c| u16::from(c) * 10 > u16::from(max) * 6))
    };
    let nearest = |p: [u8; 3]| {
        let pixel = lit(p)?;
        PATTERN_BARS.iter().position(|bar| lit(*bar) == Some(pixel))
    };
    for y in (0..shot.height).step_by(4) {
        let mut runs: Vec<(usize, u32, u32)> = Vec::new();
        for x in 0..shot.width {
            let bar = nearest(shot.pixel(x, y));
            match (bar, runs.last_mut()) {
                (Some(bar), Some(last)) if last.0 == bar && last.2 + 1 == x => last.2 = x,
                (Some(bar), _) => runs.push((bar, x, x)),
                (None, _) => {}
            }
        }
        let wide: Vec<_> = runs.into_iter().filter(|(_, start, end)| end - start + 1 >= min_width).collect();
        for window in wide.windows(7) {
            if window.iter().enumerate().all(|(i, (bar, _, _))| *bar == i) {
                return Some((y, window.iter().map(|(_, s, e)| (*s, *e)).collect()));
            }
        }
    }
    None
}

#[test]
fn the_demo_shows_the_test_pattern_and_plays_the_tone() {
    let dir = std::env::temp_dir().join(format!("chinwag-window-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pulse = PulseServer::start(&dir.join("pulse")).expect("a private PulseAudio server");
    let xvfb = Xvfb::start(1280, 800).expect("Xvfb");
    let mut app = Command::new(env!("CARGO_BIN_EXE_chinwag"))
        .arg("--demo")
        .env("DISPLAY", &xvfb.display)
        .env_remove("WAYLAND_DISPLAY")
        .envs(pulse.env())
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("HOME", &dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("the app starts");
    // Record what the app plays, from the null sink's monitor.
    let recording = dir.join("played.wav");
    let mut recorder = Command::new("parecord")
        .args(["--device=chinwag_null.monitor", "--file-format=wav", "--rate=48000", "--channels=1"])
        .arg(&recording)
        .envs(pulse.env())
        .spawn()
        .expect("parecord (pulseaudio-utils) runs");
    std::thread::sleep(Duration::from_secs(8));
    let shot = xvfb.screenshot().unwrap();
    shot.write_ppm(&dir.join("demo.ppm")).unwrap();
    if let Some(path) = std::env::var_os("CHINWAG_SCREENSHOT") {
        // `CHINWAG_SCREENSHOT=docs/demo.ppm cargo test -p chinwag --test window` keeps a copy.
        shot.write_ppm(std::path::Path::new(&path)).unwrap();
    }
    // SIGINT lets parecord finish the WAV header.
    let _ = Command::new("kill").args(["-INT", &recorder.id().to_string()]).status();
    let _ = recorder.wait();
    let _ = app.kill();
    let _ = app.wait();

    let found = find_pattern(&shot, 8);
    assert!(found.is_some(), "the test pattern is not on screen (screenshot in {})", dir.display());
    let played = chinwag_capture::read_wav_48k_mono(&recording).unwrap();
    assert!(played.len() > 48_000, "{} samples recorded", played.len());
    let tail = &played[played.len() / 2..];
    let level = tone_amplitude(tail, 440.0, 48_000);
    let other = tone_amplitude(tail, 1000.0, 48_000);
    eprintln!("pattern at {found:?}; 440 Hz played at amplitude {level:.3} (1 kHz: {other:.4})");
    assert!(level > 0.02 && level > 10.0 * other, "the tone was not played: {level}");
    std::fs::remove_dir_all(dir).unwrap();
}
