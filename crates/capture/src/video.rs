//! What every video source hands the engine's video thread, and the pacing of synthetic ones.

use std::time::{Duration, Instant};

use chinwag_codec::VideoFrame;

use crate::CaptureError;

/// Something that produces video: a camera, or a test pattern.
pub trait VideoSource {
    /// Returns the next frame, blocking until it exists as a camera would. A caller that falls
    /// behind gets the newest frame, never a backlog: frames it was too slow for are dropped.
    fn next_frame(&mut self) -> Result<CapturedFrame, CaptureError>;

    /// The width and height of the frames this source delivers.
    fn size(&self) -> (u32, u32);

    /// The frames per second this source delivers when the caller keeps up.
    fn fps(&self) -> u32;
}

/// One frame and when it was captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFrame {
    pub captured_at: Instant,
    pub content: FrameContent,
}

/// A frame's pixels, either raw or as the camera already compressed them.
#[derive(Clone, PartialEq, Eq)]
pub enum FrameContent {
    Rgba(VideoFrame),
    /// A complete JPEG image (SOI to EOI) as the camera produced it: passed through so that it
    /// need not be decoded and encoded again. `width` and `height` are the camera's. Webcams
    /// often leave out the Huffman tables and rely on the standard ones, which libjpeg-turbo
    /// and browsers fill in.
    Jpeg {
        data: Vec<u8>,
        width: u32,
        height: u32,
    },
}

impl FrameContent {
    /// The frame's width and height.
    pub fn size(&self) -> (u32, u32) {
        match self {
            Self::Rgba(frame) => (frame.width, frame.height),
            Self::Jpeg { width, height, .. } => (*width, *height),
        }
    }
}

impl std::fmt::Debug for FrameContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rgba(frame) => write!(f, "Rgba({frame:?})"),
            Self::Jpeg { data, width, height } => write!(f, "Jpeg({width}x{height}, {} bytes)", data.len()),
        }
    }
}

/// Paces a synthetic video source like a camera: frame `n` is due `n / fps` seconds after the
/// first. A caller that falls a whole frame behind skips to the newest due frame, as it would
/// with a camera whose older frames were overwritten.
#[derive(Debug)]
pub(crate) struct FramePacer {
    fps: u32,
    start: Option<Instant>,
    next_frame_idx: u64,
}

impl FramePacer {
    pub(crate) fn new(fps: u32) -> Self {
        Self { fps: fps.max(1), start: None, next_frame_idx: 0 }
    }

    /// Waits until the next frame is due; returns its index and the instant it was due.
    pub(crate) fn wait(&mut self) -> (u64, Instant) {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let newest_due = (now - start).as_nanos() * u128::from(self.fps) / 1_000_000_000;
        let frame_idx = self.next_frame_idx.max(u64::try_from(newest_due).unwrap_or(u64::MAX));
        let due = start + self.offset(frame_idx);
        if due > now {
            std::thread::sleep(due - now);
        }
        self.next_frame_idx = frame_idx + 1;
        (frame_idx, due)
    }

    /// How long after the first frame frame `frame_idx` is due, rounded down to a nanosecond.
    fn offset(&self, frame_idx: u64) -> Duration {
        let nanos = u128::from(frame_idx) * 1_000_000_000 / u128::from(self.fps);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_due_one_period_apart_and_a_late_caller_skips_to_the_newest() {
        let mut pacer = FramePacer::new(50);
        let (first_idx, first) = pacer.wait();
        let (second_idx, second) = pacer.wait();
        assert_eq!((first_idx, second_idx), (0, 1));
        assert_eq!(second - first, Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(70));
        let (late_idx, late) = pacer.wait();
        assert!(late_idx >= 4, "frames 2 and 3 were overwritten while the caller slept, got {late_idx}");
        assert_eq!(late - first, Duration::from_millis(20) * late_idx as u32);
    }
}
