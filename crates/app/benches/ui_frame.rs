//! UI frame time of the call screen with one 1280×720 and nine 320×240 remote tiles, every
//! tile getting a new frame every UI frame (so texture uploads are included):
//! `cargo bench -p chinwag --bench ui_frame`.
//!
//! egui_kittest drives the real app headless, through the same fake backend the UI tests use;
//! `render` draws with wgpu on whatever adapter the machine has (Mesa's software rasteriser
//! here), so the figure is pessimistic next to a GPU. The baseline, measured in the same run,
//! is the same screen with the cameras off: no video, no uploads.

use std::time::{Duration, Instant};

use chinwag::fake::{FakeRemote, fake_backend};
use chinwag::{ChinwagApp, Settings};
use chinwag_engine::{CallEvent, ParticipantId, Peer, VideoFrame};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;

const PEERS: u32 = 10;

fn frame(width: u32, height: u32, shade: u8) -> VideoFrame {
    let mut rgba = Vec::with_capacity(width as usize * height as usize * 4);
    for y in 0..height {
        for x in 0..width {
            rgba.extend_from_slice(&[
                (x as u8).wrapping_add(shade),
                (y as u8).wrapping_add(shade),
                shade,
                255,
            ]);
        }
    }
    VideoFrame { width, height, rgba }
}

fn call(camera: bool) -> (Harness<'static, ChinwagApp>, FakeRemote) {
    let (backend, remote) = fake_backend();
    let settings = Settings {
        server: "relay.example".into(),
        room: "bench".into(),
        name: "Me".into(),
        ..Settings::default()
    };
    let app = ChinwagApp::with_backend(Box::new(backend), settings);
    let mut harness = Harness::builder()
        .with_size([1600.0, 1000.0])
        .build_ui_state(|ui, app: &mut ChinwagApp| app.show(ui), app);
    harness.run();
    harness.get_by_label("Join").click();
    harness.run();
    let peers = (0..PEERS)
        .map(|i| Peer { id: ParticipantId(i + 2), name: format!("Peer {i}"), muted: false, camera })
        .collect();
    remote.send(CallEvent::Joined { id: ParticipantId(1), room: "bench".into(), peers, rejoined: false });
    harness.run_steps(3);
    (harness, remote)
}

/// Median and 95th-percentile times of one UI frame, (egui with texture deltas, then the wgpu
/// render that uploads the textures and draws), in milliseconds.
fn measure(harness: &mut Harness<'static, ChinwagApp>, remote: &FakeRemote, video: bool) -> [(f64, f64); 2] {
    let frames: Vec<[VideoFrame; 2]> = (0..PEERS as u8)
        .map(|i| {
            [
                frame(if i == 0 { 1280 } else { 320 }, if i == 0 { 720 } else { 240 }, i * 20),
                frame(if i == 0 { 1280 } else { 320 }, if i == 0 { 720 } else { 240 }, i * 20 + 7),
            ]
        })
        .collect();
    let (mut egui_times, mut render_times) = (Vec::new(), Vec::new());
    for step in 0..60 {
        if video {
            for (i, pair) in frames.iter().enumerate() {
                remote.set_frame(ParticipantId(i as u32 + 2), pair[step % 2].clone());
            }
        }
        let started = Instant::now();
        harness.step();
        let stepped = Instant::now();
        let _ = harness.render().expect("wgpu renders the frame");
        if step >= 10 {
            egui_times.push(stepped - started);
            render_times.push(stepped.elapsed());
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    [egui_times, render_times].map(|mut times| {
        times.sort();
        (ms(times[times.len() / 2]), ms(times[times.len() * 95 / 100]))
    })
}

fn main() {
    let (mut harness, remote) = call(true);
    let [video_egui, video_render] = measure(&mut harness, &remote, true);
    let (mut harness, remote) = call(false);
    let [idle_egui, idle_render] = measure(&mut harness, &remote, false);
    println!(
        "call screen, 1600x1000, one 1280x720 and nine 320x240 tiles, new frames every UI frame (ms, p50 / p95):"
    );
    println!(
        "  egui frame incl. texture deltas: {:.2} / {:.2}   render incl. uploads (wgpu): {:.2} / {:.2}",
        video_egui.0, video_egui.1, video_render.0, video_render.1
    );
    println!(
        "  baseline, cameras off:           {:.2} / {:.2}   render: {:.2} / {:.2}",
        idle_egui.0, idle_egui.1, idle_render.0, idle_render.1
    );
    println!(
        "  video adds {:.2} ms of egui work and {:.2} ms of rendering per frame (p50)",
        video_egui.0 - idle_egui.0,
        video_render.0 - idle_render.0
    );
}
