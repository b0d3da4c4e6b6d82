//! A camera-like video clip made in code, for `chinwag-bot --send-video FILE.mjpeg`: a flat
//! test pattern compresses three to four times better than what a camera sees, which flatters
//! every rate figure. The frames are [`camera_like`] pictures, moving, so that consecutive
//! frames differ.

use std::path::Path;

use chinwag_codec::JpegEncoder;
use chinwag_codec::picture::camera_like;

/// Writes `n_frames` of the clip at `width`×`height` as an `.mjpeg` file (concatenated JPEG
/// frames at quality 90, so that the sender's own re-encoding decides the cost).
pub fn write_camera_like_clip(path: &Path, width: u32, height: u32, n_frames: u32) -> anyhow::Result<()> {
    let mut encoder = JpegEncoder::new(90)?;
    let mut clip = Vec::new();
    let mut jpeg = Vec::new();
    for frame_idx in 0..n_frames {
        encoder.encode(&camera_like(width, height, frame_idx), &mut jpeg)?;
        clip.extend_from_slice(&jpeg);
    }
    std::fs::write(path, clip)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clip_costs_what_a_camera_does_and_moves() {
        let mut encoder = JpegEncoder::new(chinwag_codec::DEFAULT_JPEG_QUALITY).unwrap();
        let (mut first, mut later) = (Vec::new(), Vec::new());
        let frame = camera_like(640, 480, 0);
        encoder.encode(&frame, &mut first).unwrap();
        // A camera's 640×480 frame at quality 75 takes some 30-45 kB; a flat pattern 10.
        assert!((25_000..60_000).contains(&first.len()), "{} bytes", first.len());
        let moved = camera_like(640, 480, 15);
        encoder.encode(&moved, &mut later).unwrap();
        let differing = frame.rgba.iter().zip(&moved.rgba).filter(|(a, b)| a.abs_diff(**b) > 20).count();
        assert!(differing > frame.rgba.len() / 20, "only {differing} bytes changed in half a second");
    }
}
