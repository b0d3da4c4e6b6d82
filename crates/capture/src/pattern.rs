//! A test pattern that stands in for a camera: colour bars a receiver can check, and a moving
//! box and frame counter a person can see are live.

use chinwag_codec::VideoFrame;

use crate::video::FramePacer;
use crate::{CaptureError, CapturedFrame, FrameContent, VideoSource};

/// The colours of the pattern's seven vertical bars, left to right: white, yellow, cyan, green,
/// magenta, red, blue, at full intensity. Bar `i` covers columns `i * width / 7` up to
/// `(i + 1) * width / 7` of the rows above `2 * height / 3`.
pub const PATTERN_BARS: [[u8; 3]; 7] =
    [[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0], [0, 0, 255]];

/// The lower third behind the box and the counter.
const BACKGROUND: [u8; 4] = [24, 24, 24, 255];
/// The moving box and the counter's digits.
const INK: [u8; 4] = [255, 255, 255, 255];

/// Seven bars over the top two-thirds; below them a box that moves a few pixels a frame and
/// wraps around, and the frame's index in digits. Frames come paced in real time at `fps`.
pub struct TestPatternSource {
    width: u32,
    height: u32,
    fps: u32,
    /// The bars and the dark lower third, drawn once: each frame starts as a copy of it.
    background: Vec<u8>,
    layout: Layout,
    pacer: FramePacer,
}

impl TestPatternSource {
    pub fn new(width: u32, height: u32, fps: u32) -> Self {
        let layout = Layout::new(width, height);
        let mut background = Vec::with_capacity(width as usize * height as usize * 4);
        let mut bar_row = Vec::with_capacity(width as usize * 4);
        for (bar_idx, [r, g, b]) in (0..).zip(PATTERN_BARS) {
            let bar_width = (bar_idx + 1) * width / 7 - bar_idx * width / 7;
            bar_row.extend([r, g, b, 255].repeat(bar_width as usize));
        }
        for _ in 0..layout.bars_height {
            background.extend_from_slice(&bar_row);
        }
        background.extend(BACKGROUND.repeat(width as usize * (height - layout.bars_height) as usize));
        Self { width, height, fps: fps.max(1), background, layout, pacer: FramePacer::new(fps) }
    }

    /// Draws frame `frame_idx` without waiting for it: the same index always gives the same
    /// image, so a receiver can compare what arrived with what was sent.
    pub fn render(&self, frame_idx: u64) -> VideoFrame {
        let mut frame = VideoFrame { width: self.width, height: self.height, rgba: self.background.clone() };
        if self.width == 0 || self.height == 0 {
            return frame;
        }
        let Layout { box_top, box_size, box_step, text_left, text_top, text_scale, .. } = self.layout;
        let box_left = (frame_idx.wrapping_mul(u64::from(box_step)) % u64::from(self.width)) as u32;
        // The box wraps around the right edge: draw the part that fits, then the rest from x = 0.
        let first_part = box_size.min(self.width - box_left);
        fill_rect(&mut frame, box_left, box_top, first_part, box_size, INK);
        fill_rect(&mut frame, 0, box_top, box_size - first_part, box_size, INK);

        let digits = frame_idx.to_string();
        for (digit_idx, digit) in digits.bytes().enumerate() {
            let glyph = &DIGITS[usize::from(digit - b'0')];
            let glyph_left = text_left + digit_idx as u32 * (GLYPH_WIDTH + 1) * text_scale;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..GLYPH_WIDTH {
                    if bits & (1 << (GLYPH_WIDTH - 1 - col)) != 0 {
                        let x = glyph_left + col * text_scale;
                        let y = text_top + row as u32 * text_scale;
                        fill_rect(&mut frame, x, y, text_scale, text_scale, INK);
                    }
                }
            }
        }
        frame
    }
}

impl VideoSource for TestPatternSource {
    fn next_frame(&mut self) -> Result<CapturedFrame, CaptureError> {
        let (frame_idx, due) = self.pacer.wait();
        Ok(CapturedFrame { captured_at: due, content: FrameContent::Rgba(self.render(frame_idx)) })
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn fps(&self) -> u32 {
        self.fps
    }
}

/// Where the pattern's parts go for one frame size.
#[derive(Debug, Clone, Copy)]
struct Layout {
    bars_height: u32,
    /// The box is a square in the upper half of the lower third.
    box_top: u32,
    box_size: u32,
    box_step: u32,
    /// The counter sits in the lower half of the lower third, each font pixel a square of
    /// `text_scale` pixels.
    text_left: u32,
    text_top: u32,
    text_scale: u32,
}

impl Layout {
    fn new(width: u32, height: u32) -> Self {
        let bars_height = height * 2 / 3;
        let lower = height - bars_height;
        let box_size = (lower * 3 / 8).max(1);
        let text_scale = (lower * 3 / 8 / GLYPH_HEIGHT).max(1);
        let text_top = bars_height + lower / 2 + (lower / 2).saturating_sub(GLYPH_HEIGHT * text_scale) / 2;
        Self {
            bars_height,
            box_top: bars_height + lower / 16,
            box_size,
            box_step: (width / 128).max(2),
            text_left: text_scale * 2,
            text_top,
            text_scale,
        }
    }
}

/// Fills the part of the rectangle that lies inside the frame.
fn fill_rect(frame: &mut VideoFrame, x: u32, y: u32, width: u32, height: u32, rgba: [u8; 4]) {
    let x_start = x.min(frame.width) as usize;
    let x_end = x.saturating_add(width).min(frame.width) as usize;
    let y_end = y.saturating_add(height).min(frame.height);
    let stride = frame.width as usize * 4;
    for row in y..y_end {
        let row_start = row as usize * stride;
        let span = &mut frame.rgba[row_start + x_start * 4..row_start + x_end * 4];
        for pixel in span.chunks_exact_mut(4) {
            pixel.copy_from_slice(&rgba);
        }
    }
}

const GLYPH_WIDTH: u32 = 5;
const GLYPH_HEIGHT: u32 = 7;

/// A 5×7 font for the digits: one byte a row, top to bottom, the low five bits left to right.
const DIGITS: [[u8; 7]; 10] = [
    [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110],
    [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
    [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111],
    [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110],
    [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010],
    [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110],
    [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110],
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000],
    [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110],
    [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100],
];

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// The pixels of rows `rows` across the whole width.
    fn rows(frame: &VideoFrame, rows: std::ops::Range<u32>) -> &[u8] {
        let stride = frame.width as usize * 4;
        &frame.rgba[rows.start as usize * stride..rows.end as usize * stride]
    }

    #[test]
    fn the_bars_are_the_documented_colours_in_equal_widths() {
        for (width, height) in [(320, 240), (1280, 720), (176, 144), (641, 359)] {
            let frame = TestPatternSource::new(width, height, 30).render(0);
            let bars_height = height * 2 / 3;
            for (bar_idx, [r, g, b]) in PATTERN_BARS.iter().copied().enumerate() {
                let bar_idx = bar_idx as u32;
                let (left, right) = (bar_idx * width / 7, (bar_idx + 1) * width / 7 - 1);
                for x in [left, (left + right) / 2, right] {
                    for y in [0, bars_height / 2, bars_height - 1] {
                        assert_eq!(
                            frame.pixel(x, y),
                            Some([r, g, b, 255]),
                            "{width}x{height} bar {bar_idx} at ({x}, {y})"
                        );
                    }
                }
            }
            let widths: Vec<u32> = (0..7).map(|i| (i + 1) * width / 7 - i * width / 7).collect();
            assert!(widths.iter().max().unwrap() - widths.iter().min().unwrap() <= 1, "{widths:?}");
            assert_eq!(frame.pixel(width - 1, height - 1), Some(BACKGROUND), "the lower third is dark");
        }
    }

    #[test]
    fn frames_are_the_size_asked_for() {
        for (width, height) in [(320, 240), (1280, 720), (176, 144), (1, 1), (7, 3), (0, 0)] {
            let mut source = TestPatternSource::new(width, height, 1000);
            assert_eq!(source.size(), (width, height));
            let CapturedFrame { content: FrameContent::Rgba(frame), .. } = source.next_frame().unwrap()
            else {
                panic!("a test pattern is raw RGBA");
            };
            assert_eq!((frame.width, frame.height), (width, height));
            assert_eq!(frame.rgba.len(), width as usize * height as usize * 4);
            // Late frames and large counters must draw inside the frame too.
            let late = source.render(u64::MAX);
            assert_eq!(late.rgba.len(), frame.rgba.len());
        }
    }

    #[test]
    fn the_counter_and_box_change_between_frames_and_the_bars_do_not() {
        let source = TestPatternSource::new(320, 240, 30);
        let Layout { bars_height, box_top, box_size, text_top, text_scale, .. } = source.layout;
        let text_rows = text_top..text_top + GLYPH_HEIGHT * text_scale;
        let box_rows = box_top..box_top + box_size;
        for frame_idx in [0, 9, 99, 12_345] {
            let (this, next) = (source.render(frame_idx), source.render(frame_idx + 1));
            assert_eq!(rows(&this, 0..bars_height), rows(&next, 0..bars_height), "bars at frame {frame_idx}");
            assert_ne!(
                rows(&this, text_rows.clone()),
                rows(&next, text_rows.clone()),
                "counter at {frame_idx}"
            );
            assert_ne!(rows(&this, box_rows.clone()), rows(&next, box_rows.clone()), "box at {frame_idx}");
            assert!(rows(&this, text_rows.clone()).chunks(4).any(|p| p == INK), "digits are drawn");
        }
        assert_eq!(source.render(7), source.render(7), "a frame index always gives the same image");
    }

    #[test]
    fn frames_are_paced_at_the_frame_rate() {
        let mut source = TestPatternSource::new(176, 144, 25);
        let first = source.next_frame().unwrap();
        let second = source.next_frame().unwrap();
        assert_eq!(second.captured_at - first.captured_at, Duration::from_millis(40));
        assert!(Instant::now() >= second.captured_at, "a frame is not delivered before it is due");
        assert_eq!(source.fps(), 25);
    }

    #[test]
    fn rendering_720p_is_cheap() {
        let source = TestPatternSource::new(1280, 720, 30);
        let started = Instant::now();
        for frame_idx in 0..10 {
            std::hint::black_box(source.render(frame_idx));
        }
        let each = started.elapsed() / 10;
        // A few milliseconds in a debug build; the bound leaves room for a busy machine.
        assert!(each < Duration::from_millis(25), "{each:?} a frame");
    }
}
