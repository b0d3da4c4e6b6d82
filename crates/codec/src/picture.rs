//! Pictures made in code for tests and benchmarks: what makes camera frames cost bytes
//! (lighting gradients, sensor-like noise that changes every frame, fine texture, hard edges),
//! which a flat test pattern lacks. A 640×480 one takes 37.6 kB at quality 75.

use crate::VideoFrame;

/// A camera-like picture: `frame_idx` moves it (a slow pan, a swaying disc) and reseeds the
/// noise; frame 0 is the codec benchmark's picture.
pub fn camera_like(width: u32, height: u32, frame_idx: u32) -> VideoFrame {
    let mut seed = 0x2545_f491_u32 ^ frame_idx.wrapping_mul(0x9e37_79b9);
    let mut rgba = Vec::with_capacity(width as usize * height as usize * 4);
    let (w, h) = (width as f32, height as f32);
    let t = frame_idx as f32 / 30.0;
    let pan = 24.0 * t;
    let sway = 0.04 * (t * 1.7).sin();
    for y in 0..height {
        for x in 0..width {
            let xs = x as f32 + pan;
            let (u, v) = (xs / w, y as f32 / h);
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed % 13) as f32 - 6.0;
            let texture = 10.0 * ((xs * 0.9).sin() * (y as f32 * 0.7).cos());
            // A warm wall lit from the left, darker towards the floor.
            let light = 0.55 + 0.45 * (1.0 - u.fract()) * (1.0 - 0.5 * v);
            let mut rgb = [200.0 * light, 170.0 * light, 140.0 * light];
            // A bright window with a dark frame in the upper right.
            if (0.62..0.92).contains(&u.fract()) && (0.08..0.45).contains(&v) {
                let bar = (u.fract() - 0.77).abs() < 0.01 || (v - 0.26).abs() < 0.012;
                rgb = if bar { [40.0, 35.0, 30.0] } else { [235.0, 240.0, 250.0 - 40.0 * v] };
            }
            // A face-sized disc, shaded, that sways.
            let (dx, dy) = ((x as f32 / w - 0.42 - sway) * w / h, v - 0.5);
            let r2 = dx * dx + dy * dy;
            if r2 < 0.07 {
                let shade = 1.0 - 2.5 * r2;
                rgb = [220.0 * shade + texture, 160.0 * shade + texture, 130.0 * shade + texture];
            }
            // A striped shirt along the bottom.
            if v > 0.8 {
                let stripe = if (x / 12) % 2 == 0 { 60.0 } else { 180.0 };
                rgb = [stripe, stripe * 0.6, 90.0 + texture];
            }
            let px = rgb.map(|c| (c + noise + 0.3 * texture).clamp(0.0, 255.0) as u8);
            rgba.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
    }
    VideoFrame { width, height, rgba }
}
