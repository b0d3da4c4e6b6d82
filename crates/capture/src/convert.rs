//! Turning what a camera delivers into what the engine takes: raw pixel formats into RGBA, and
//! MJPEG buffers cut to the one JPEG image they hold.
//!
//! YUYV and NV12 go through nokhwa-core's converters (BT.601, video range, as UVC cameras send
//! them), which need none of nokhwa's optional features and are built optimised even in debug
//! builds; the one-byte-a-channel formats are copied here.

use chinwag_codec::VideoFrame;
use nokhwa::utils::{FrameFormat, Resolution, buf_nv12_to_rgb, buf_yuyv422_to_rgb};

/// How many bytes a tightly packed frame of `format` at this size holds; `None` for MJPEG, whose
/// frames vary in length.
pub(crate) fn raw_frame_len(format: FrameFormat, width: u32, height: u32) -> Option<usize> {
    let (width, height) = (width as usize, height as usize);
    match format {
        FrameFormat::MJPEG => None,
        // Two pixels share four bytes: Y0 U Y1 V.
        FrameFormat::YUYV => Some(width.div_ceil(2) * 4 * height),
        // A full-size Y plane, then U and V interleaved at half the resolution both ways.
        FrameFormat::NV12 => Some(width * height + width.div_ceil(2) * 2 * height.div_ceil(2)),
        FrameFormat::GRAY => Some(width * height),
        FrameFormat::RAWRGB | FrameFormat::RAWBGR => Some(width * height * 3),
    }
}

/// Converts one raw frame of exactly [`raw_frame_len`] bytes to RGBA; `None` when it is MJPEG or
/// the data does not fit the format and size.
pub(crate) fn raw_to_rgba(format: FrameFormat, data: &[u8], width: u32, height: u32) -> Option<VideoFrame> {
    if Some(data.len()) != raw_frame_len(format, width, height) {
        return None;
    }
    let mut frame = VideoFrame::filled(width, height, [0, 0, 0, 255]);
    match format {
        FrameFormat::MJPEG => return None,
        FrameFormat::YUYV => buf_yuyv422_to_rgb(data, &mut frame.rgba, true).ok()?,
        FrameFormat::NV12 => {
            buf_nv12_to_rgb(Resolution::new(width, height), data, &mut frame.rgba, true).ok()?;
        }
        FrameFormat::GRAY => {
            for (pixel, &luma) in frame.rgba.chunks_exact_mut(4).zip(data) {
                pixel[..3].fill(luma);
            }
        }
        FrameFormat::RAWRGB => {
            for (pixel, rgb) in frame.rgba.chunks_exact_mut(4).zip(data.chunks_exact(3)) {
                pixel[..3].copy_from_slice(rgb);
            }
        }
        FrameFormat::RAWBGR => {
            for (pixel, bgr) in frame.rgba.chunks_exact_mut(4).zip(data.chunks_exact(3)) {
                pixel[..3].copy_from_slice(&[bgr[2], bgr[1], bgr[0]]);
            }
        }
    }
    Some(frame)
}

/// The length of the JPEG image at the start of `data`, up to and including its end-of-image
/// marker; `None` when `data` does not start with one complete image.
///
/// A V4L2 capture buffer is as long as the largest frame could be, and what follows the image
/// is stale bytes (often of an earlier image, end marker and all), so the end is found by
/// walking the image's segments and its entropy-coded data, never by searching from the back.
pub(crate) fn jpeg_len(data: &[u8]) -> Option<usize> {
    if data.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut at = 2;
    loop {
        if *data.get(at)? != 0xFF {
            return None;
        }
        // Any number of 0xFF fill bytes may precede a marker.
        while *data.get(at + 1)? == 0xFF {
            at += 1;
        }
        let marker = *data.get(at + 1)?;
        at += 2;
        match marker {
            0xD9 => return Some(at),
            // Markers without a length: TEM and the restart markers.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let segment_len = usize::from(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]));
        if segment_len < 2 {
            return None;
        }
        at += segment_len;
        if marker == 0xDA {
            // Entropy-coded data follows a start of scan. In it, 0xFF is followed by 0x00
            // (a stuffed byte), a restart marker, or the marker that ends the scan.
            loop {
                if *data.get(at)? == 0xFF {
                    match *data.get(at + 1)? {
                        0x00 | 0xD0..=0xD7 => at += 2,
                        _ => break,
                    }
                } else {
                    at += 1;
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A structurally complete JPEG: SOI, an APP0 segment, a scan with stuffed bytes and a
    /// restart marker, EOI. Its pixels are not decodable; only its shape matters here.
    pub(crate) fn jpeg_shape() -> Vec<u8> {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend([0xFF, 0xE0, 0x00, 0x07, b'J', b'F', b'I', b'F', 0x00]);
        jpeg.extend([0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02]);
        jpeg.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0x00]);
        jpeg.extend([0xFF, 0xFF, 0xD9]);
        jpeg
    }

    #[test]
    fn a_jpeg_is_cut_at_its_own_end_marker_not_at_stale_bytes_after_it() {
        let jpeg = jpeg_shape();
        let mut buffer = jpeg.clone();
        // What an earlier, longer frame left in the capture buffer, end marker included.
        buffer.extend([0x00, 0x11, 0xFF, 0xD9, 0xAB, 0xFF, 0xD9, 0x00, 0x00]);
        assert_eq!(jpeg_len(&buffer), Some(jpeg.len()));
        assert_eq!(jpeg_len(&jpeg), Some(jpeg.len()));
    }

    #[test]
    fn a_truncated_or_foreign_buffer_is_no_jpeg() {
        let jpeg = jpeg_shape();
        for cut in 0..jpeg.len() {
            assert_eq!(jpeg_len(&jpeg[..cut]), None, "cut at {cut}");
        }
        assert_eq!(jpeg_len(&[0u8; 64]), None);
        assert_eq!(
            jpeg_len(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x00]),
            None,
            "a segment shorter than its length"
        );
    }

    #[test]
    fn yuyv_becomes_rgba_with_video_range_bt601() {
        // Four pixels: white, black, then a red pair sharing their chroma.
        let yuyv = [235, 128, 16, 128, 81, 90, 81, 240];
        let frame = raw_to_rgba(FrameFormat::YUYV, &yuyv, 4, 1).unwrap();
        let near = |got: [u8; 4], want: [u8; 4]| got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 2);
        assert_eq!(frame.pixel(0, 0), Some([255, 255, 255, 255]));
        assert_eq!(frame.pixel(1, 0), Some([0, 0, 0, 255]));
        for x in [2, 3] {
            let red = frame.pixel(x, 0).unwrap();
            assert!(near(red, [255, 0, 0, 255]), "pixel {x} is {red:?}");
        }
        assert_eq!(raw_to_rgba(FrameFormat::YUYV, &yuyv[..6], 4, 1), None, "a short frame is rejected");
    }

    #[test]
    fn nv12_takes_each_pixels_chroma_from_its_2x2_block() {
        // A 4x2 frame: luma 235 (white) everywhere; the left block neutral, the right block red.
        let mut nv12 = vec![235; 8];
        nv12.extend([128, 128, 90, 240]);
        assert_eq!(raw_frame_len(FrameFormat::NV12, 4, 2), Some(nv12.len()));
        let frame = raw_to_rgba(FrameFormat::NV12, &nv12, 4, 2).unwrap();
        for y in 0..2 {
            assert_eq!(frame.pixel(0, y), Some([255, 255, 255, 255]));
            assert_eq!(frame.pixel(1, y), Some([255, 255, 255, 255]));
            let [r, g, b, _] = frame.pixel(3, y).unwrap();
            assert!(r == 255 && g < 200 && b < 200, "pixel (3, {y}) is reddish: {r} {g} {b}");
        }
    }

    #[test]
    fn packed_rgb_bgr_and_grey_become_rgba() {
        let rgb = raw_to_rgba(FrameFormat::RAWRGB, &[1, 2, 3, 4, 5, 6], 2, 1).unwrap();
        assert_eq!(rgb.rgba, [1, 2, 3, 255, 4, 5, 6, 255]);
        let bgr = raw_to_rgba(FrameFormat::RAWBGR, &[1, 2, 3, 4, 5, 6], 2, 1).unwrap();
        assert_eq!(bgr.rgba, [3, 2, 1, 255, 6, 5, 4, 255]);
        let grey = raw_to_rgba(FrameFormat::GRAY, &[7, 9], 1, 2).unwrap();
        assert_eq!(grey.rgba, [7, 7, 7, 255, 9, 9, 9, 255]);
        assert_eq!(raw_to_rgba(FrameFormat::MJPEG, &[0xFF, 0xD8], 1, 1), None);
    }
}
