//! A camera-like source from a file: concatenated JPEG frames (an `.mjpeg` file), looped.
//!
//! Tests and benchmarks need video that costs what a camera's does: a textured, moving picture
//! compresses three to four times worse than the flat test pattern. The frames are decoded and
//! scaled to the size asked for, and handed on as raw pictures, so that the sender re-encodes
//! them exactly as it would a camera's.

use std::path::{Path, PathBuf};

use chinwag_codec::{JpegDecoder, scale};

use crate::video::FramePacer;
use crate::{CaptureError, CapturedFrame, FrameContent, VideoSource};

/// JPEG frames read from a file, played in a loop at a steady rate.
pub struct ClipSource {
    frames: Vec<Vec<u8>>,
    decoder: JpegDecoder,
    width: u32,
    height: u32,
    fps: u32,
    pacer: FramePacer,
    path: PathBuf,
}

impl ClipSource {
    /// Reads every JPEG frame of `path`; frames are scaled to `width`×`height` as they play.
    pub fn open(path: &Path, width: u32, height: u32, fps: u32) -> Result<Self, CaptureError> {
        let clip_error = |reason: String| CaptureError::Clip { path: path.to_owned(), reason };
        let bytes = std::fs::read(path).map_err(|error| clip_error(error.to_string()))?;
        let frames = split_jpegs(&bytes);
        if frames.is_empty() {
            return Err(clip_error(
                "it holds no JPEG frame (an .mjpeg file is JPEG frames one after another)".into(),
            ));
        }
        Ok(Self {
            frames,
            decoder: JpegDecoder::default(),
            width,
            height,
            fps: fps.max(1),
            pacer: FramePacer::new(fps),
            path: path.to_owned(),
        })
    }

    /// How many frames the clip has before it loops.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// The JPEG images in `bytes`, each from its start-of-image marker to its end-of-image marker.
pub fn split_jpegs(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(start) = find(&bytes[at..], &[0xFF, 0xD8, 0xFF]).map(|offset| at + offset) {
        // The first end-of-image marker after the start ends the frame (an embedded thumbnail
        // would end earlier; camera and encoder frames carry none).
        let Some(end) = find(&bytes[start + 2..], &[0xFF, 0xD9]).map(|offset| start + 2 + offset + 2) else {
            break;
        };
        frames.push(bytes[start..end].to_vec());
        at = end;
    }
    frames
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

impl VideoSource for ClipSource {
    fn next_frame(&mut self) -> Result<CapturedFrame, CaptureError> {
        let (frame_idx, due) = self.pacer.wait();
        let jpeg = &self.frames[(frame_idx % self.frames.len() as u64) as usize];
        let frame = self.decoder.decode(jpeg).map_err(|error| CaptureError::Clip {
            path: self.path.clone(),
            reason: format!("frame {} does not decode: {error}", frame_idx % self.frames.len() as u64),
        })?;
        let frame = if (frame.width, frame.height) == (self.width, self.height) {
            frame
        } else {
            scale(&frame, self.width, self.height)
        };
        Ok(CapturedFrame { captured_at: due, content: FrameContent::Rgba(frame) })
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn fps(&self) -> u32 {
        self.fps
    }
}

#[cfg(test)]
mod tests {
    use chinwag_codec::{JpegEncoder, VideoFrame};

    use super::*;

    #[test]
    fn a_clip_loops_its_frames_scaled_to_the_size_asked_for() {
        let dir = std::env::temp_dir().join(format!("chinwag-clip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("two.mjpeg");
        let mut encoder = JpegEncoder::new(80).unwrap();
        let mut file = Vec::new();
        for shade in [40u8, 200] {
            let mut jpeg = Vec::new();
            encoder.encode(&VideoFrame::filled(64, 48, [shade, shade, shade, 255]), &mut jpeg).unwrap();
            file.extend_from_slice(&jpeg);
        }
        std::fs::write(&path, &file).unwrap();
        let mut clip = ClipSource::open(&path, 32, 24, 60).unwrap();
        assert_eq!(clip.len(), 2);
        let shades: Vec<u8> = (0..4)
            .map(|_| match clip.next_frame().unwrap().content {
                FrameContent::Rgba(frame) => {
                    assert_eq!((frame.width, frame.height), (32, 24));
                    frame.pixel(16, 12).unwrap()[0]
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(shades[0] < 80 && shades[1] > 160 && shades[2] < 80 && shades[3] > 160, "{shades:?}");

        std::fs::write(&path, b"not a jpeg").unwrap();
        let error = ClipSource::open(&path, 32, 24, 60).err().unwrap();
        assert!(error.to_string().contains("no JPEG frame"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
