//! JPEG video: one encoder per sender, one decoder per remote participant, and a scaler.
//!
//! Every video frame is an independent baseline JPEG with 4:2:0 chroma, so a lost frame costs
//! only itself and a receiver can start from any frame. libjpeg-turbo (through `turbojpeg`)
//! does the work with SIMD; this module adds what a call needs around it: one output buffer
//! reused frame after frame, size limits that are checked from the header before any pixel
//! memory is allocated, and a policy that a frame libjpeg complains about in any way, even
//! only with a warning such as "premature end of JPEG file", is an error rather than a
//! half-grey picture shown as if it were fine.

use turbojpeg::{Compressor, DecompressHeader, Decompressor, Image, PixelFormat, ScalingFactor, Subsamp};

use crate::{CodecError, VideoFrame};

/// The quality a sender starts at: libjpeg's own default. On the benchmark's camera-like
/// 640×480 picture (gradients, sensor-like noise, hard edges) a frame is 37.5 kB at 75, about
/// 9 Mbit/s at 30 fps, and looks clean even zoomed in; 70 saves a tenth (33.6 kB), 80 costs a
/// sixth more (43.8 kB), and at 50 (22.7 kB) the noise smears and edges ring when zoomed.
pub const DEFAULT_JPEG_QUALITY: u8 = 75;

/// The largest frame [`JpegDecoder::default`] accepts: 1080p.
pub const DEFAULT_MAX_WIDTH: u32 = 1920;
pub const DEFAULT_MAX_HEIGHT: u32 = 1080;

/// The most scans a decoder reads from one progressive JPEG. Chinwag sends baseline (one
/// scan) and ordinary progressive files have about ten; a crafted file with thousands of tiny
/// scans would otherwise cost seconds of CPU for one frame.
const MAX_SCANS: u32 = 100;

/// Fixed-point unit of the scaler's weights: 14 bits keeps `weight * 255` summed over any
/// number of taps within a `u32`, and each weight within a `u16`, which lets the compiler
/// use 16-bit SIMD multiplies.
const WEIGHT_ONE: u32 = 1 << 14;

/// Encodes RGBA frames to baseline 4:2:0 JPEG; reuse one for a whole stream.
pub struct JpegEncoder {
    compressor: Compressor,
    quality: u8,
    /// Room for the largest JPEG libjpeg-turbo could produce for the frame size seen so far,
    /// so encoding never reallocates inside libjpeg and never zeroes megabytes per frame: the
    /// encoded bytes are then copied into the caller's buffer.
    scratch: Vec<u8>,
}

impl JpegEncoder {
    /// An encoder at `quality` 1 (smallest) to 100 (best); [`DEFAULT_JPEG_QUALITY`] suits calls.
    pub fn new(quality: u8) -> Result<Self, CodecError> {
        let mut compressor = Compressor::new().map_err(CodecError::JpegEncode)?;
        compressor.set_subsamp(Subsamp::Sub2x2).map_err(CodecError::JpegEncode)?;
        let mut this = Self { compressor, quality, scratch: Vec::new() };
        this.set_quality(quality)?;
        Ok(this)
    }

    pub fn quality(&self) -> u8 {
        self.quality
    }

    /// Changes the quality from the next frame on; the sender lowers it when the link is short.
    pub fn set_quality(&mut self, quality: u8) -> Result<(), CodecError> {
        if !(1..=100).contains(&quality) {
            return Err(CodecError::BadJpegQuality(quality));
        }
        self.compressor.set_quality(i32::from(quality)).map_err(CodecError::JpegEncode)?;
        self.quality = quality;
        Ok(())
    }

    /// Encodes `frame` into `out`, replacing what it held. The alpha channel is ignored.
    pub fn encode(&mut self, frame: &VideoFrame, out: &mut Vec<u8>) -> Result<(), CodecError> {
        check_frame(frame)?;
        let (width, height) = (frame.width as usize, frame.height as usize);
        let worst_case = self.compressor.buf_len(width, height).map_err(CodecError::JpegEncode)?;
        if self.scratch.len() < worst_case {
            self.scratch.resize(worst_case, 0);
        }
        let image = Image {
            pixels: frame.rgba.as_slice(),
            width,
            pitch: width * 4,
            height,
            format: PixelFormat::RGBA,
        };
        let len =
            self.compressor.compress_to_slice(image, &mut self.scratch).map_err(CodecError::JpegEncode)?;
        out.clear();
        out.extend_from_slice(&self.scratch[..len]);
        Ok(())
    }
}

/// Decodes JPEG frames from one remote participant, refusing any larger than its limits.
pub struct JpegDecoder {
    decompressor: Decompressor,
    max_width: u32,
    max_height: u32,
}

impl Default for JpegDecoder {
    /// A decoder that accepts frames up to 1080p.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_WIDTH, DEFAULT_MAX_HEIGHT)
    }
}

impl JpegDecoder {
    /// A decoder that refuses frames wider than `max_width` or taller than `max_height`.
    pub fn new(max_width: u32, max_height: u32) -> Self {
        Self { decompressor: new_decompressor(), max_width, max_height }
    }

    /// The largest frame this decoder accepts, as (width, height).
    pub fn max_size(&self) -> (u32, u32) {
        (self.max_width, self.max_height)
    }

    /// The (width, height) a JPEG declares, read from its header alone: no pixel is decoded
    /// and the limits are not applied. A header libjpeg cannot parse is [`CodecError::BadJpeg`].
    ///
    /// This takes `&self`, so it parses with a short-lived TurboJPEG handle of its own (about
    /// a microsecond in all); [`decode`](Self::decode) reads the header with its own handle.
    pub fn read_header(&self, jpeg: &[u8]) -> Result<(u32, u32), CodecError> {
        let header = turbojpeg::read_header(jpeg).map_err(bad_header)?;
        header_size(&header)
    }

    /// Decodes one frame to RGBA with alpha 255. The header is read first: a frame larger than
    /// the limits is [`CodecError::FrameTooLarge`] before any pixel memory is allocated, and a
    /// malformed, truncated or otherwise damaged frame is [`CodecError::BadJpeg`]. Never panics
    /// on any input, and the decoder stays usable after an error.
    pub fn decode(&mut self, jpeg: &[u8]) -> Result<VideoFrame, CodecError> {
        let mut frame = VideoFrame { width: 0, height: 0, rgba: Vec::new() };
        self.decode_into(jpeg, &mut frame)?;
        Ok(frame)
    }

    /// [`decode`](Self::decode) into `frame`, reusing its buffer: a receiver that keeps one
    /// frame per participant saves allocating and clearing 3.7 MB per 720p frame. After an
    /// error `frame` is empty (0x0), never a partial picture; its allocation is kept.
    pub fn decode_into(&mut self, jpeg: &[u8], frame: &mut VideoFrame) -> Result<(), CodecError> {
        let result = self
            .checked_header(jpeg)
            .and_then(|header| self.decode_at(jpeg, &header, ScalingFactor::ONE, frame));
        if result.is_err() {
            frame.width = 0;
            frame.height = 0;
            frame.rgba.clear();
        }
        result
    }

    /// Decodes one frame at the smallest of libjpeg-turbo's built-in scales (1/8, 2/8, … 8/8)
    /// that still gives at least `min_width` × `min_height`; never larger than the frame
    /// itself. Much cheaper than a full decode when a participant is shown in a small tile;
    /// follow with [`scale`] for an exact size. Limits and errors are as for
    /// [`decode`](Self::decode), checked against the frame's full size.
    pub fn decode_downscaled(
        &mut self,
        jpeg: &[u8],
        min_width: u32,
        min_height: u32,
    ) -> Result<VideoFrame, CodecError> {
        let header = self.checked_header(jpeg)?;
        let factor = if header.is_lossless {
            // libjpeg-turbo can only scale DCT-coded images.
            ScalingFactor::ONE
        } else {
            (1..=8)
                .map(|eighths| ScalingFactor::new(eighths, 8))
                .find(|factor| {
                    factor.scale(header.width) >= min_width as usize
                        && factor.scale(header.height) >= min_height as usize
                })
                .unwrap_or(ScalingFactor::ONE)
        };
        let mut frame = VideoFrame { width: 0, height: 0, rgba: Vec::new() };
        self.decode_at(jpeg, &header, factor, &mut frame)?;
        Ok(frame)
    }

    /// Reads the header with the decoder's own handle and applies the limits.
    fn checked_header(&mut self, jpeg: &[u8]) -> Result<DecompressHeader, CodecError> {
        let header = match self.decompressor.read_header(jpeg) {
            Ok(header) => header,
            Err(error) => {
                // libjpeg-turbo 3.1's tj3DecompressHeader returns from a header error without
                // aborting the decompression it began, and every later header read on that
                // handle then continues the broken parse ("Bogus marker length" for a good
                // frame): one bad frame would silence the participant for good. A fresh
                // handle costs microseconds, and only when a frame was bad anyway.
                self.decompressor = new_decompressor();
                return Err(bad_header(error));
            }
        };
        let (width, height) = header_size(&header)?;
        if width > self.max_width || height > self.max_height {
            return Err(CodecError::FrameTooLarge {
                width,
                height,
                max_width: self.max_width,
                max_height: self.max_height,
            });
        }
        Ok(header)
    }

    /// Decodes a frame whose header has passed [`checked_header`](Self::checked_header) into
    /// `frame`, at `factor` of its size.
    fn decode_at(
        &mut self,
        jpeg: &[u8],
        header: &DecompressHeader,
        factor: ScalingFactor,
        frame: &mut VideoFrame,
    ) -> Result<(), CodecError> {
        if self.decompressor.scaling_factor() != factor {
            self.decompressor.set_scaling_factor(factor).map_err(bad_jpeg)?;
        }
        let (width, height) = (factor.scale(header.width), factor.scale(header.height));
        // Bounded by the limits just checked: at most max_width * max_height * 4 bytes. A
        // buffer of the right size already is not cleared again: every byte is overwritten.
        frame.rgba.resize(width * height * 4, 0);
        let image = Image {
            pixels: frame.rgba.as_mut_slice(),
            width,
            pitch: width * 4,
            height,
            format: PixelFormat::RGBA,
        };
        // TurboJPEG turns every libjpeg warning (truncated data, corrupt entropy data, a
        // marker where none belongs) into a failed call, after filling what it could.
        self.decompressor.decompress(jpeg, image).map_err(bad_jpeg)?;
        frame.width = width as u32;
        frame.height = height as u32;
        Ok(())
    }
}

/// Resizes `frame` to `width` × `height`: an area average when shrinking (every source pixel
/// counts, so fine detail does not alias) and bilinear when enlarging, each axis separately.
/// A flat colour stays exactly flat. Alpha is scaled like the colours.
///
/// # Panics
/// If `frame.rgba` does not hold `width * height * 4` bytes, which [`VideoFrame`] promises.
pub fn scale(frame: &VideoFrame, width: u32, height: u32) -> VideoFrame {
    let (src_width, src_height) = (frame.width as usize, frame.height as usize);
    assert_eq!(
        frame.rgba.len(),
        src_width * src_height * 4,
        "a {}x{} VideoFrame must hold width * height * 4 bytes",
        frame.width,
        frame.height
    );
    if (width, height) == (frame.width, frame.height) {
        return frame.clone();
    }
    let (dst_width, dst_height) = (width as usize, height as usize);
    if dst_width == 0 || dst_height == 0 || src_width == 0 || src_height == 0 {
        // Nothing to scale from or to: an empty frame, or an opaque black one.
        return VideoFrame::filled(width, height, [0, 0, 0, 255]);
    }

    // The vertical pass runs along whole rows and vectorises; the horizontal one works pixel
    // by pixel. Shrinking, the vertical pass goes first so that the horizontal one has fewer
    // rows to do; enlarging, last, so that it does not have more. An axis that keeps its size
    // is left alone.
    let scale_width = |rgba: &[u8]| {
        if dst_width == src_width {
            rgba.to_vec()
        } else {
            scale_columns(rgba, src_width, &taps(src_width, dst_width))
        }
    };
    let scale_height = |rgba: &[u8], row_bytes: usize| {
        if dst_height == src_height {
            rgba.to_vec()
        } else {
            scale_rows(rgba, row_bytes, &taps(src_height, dst_height))
        }
    };
    let rgba = if dst_height <= src_height {
        scale_width(&scale_height(&frame.rgba, src_width * 4))
    } else {
        scale_height(&scale_width(&frame.rgba), dst_width * 4)
    };
    VideoFrame { width, height, rgba }
}

/// Resamples RGBA rows of `width` pixels to one pixel per tap in `columns`.
fn scale_columns(rgba: &[u8], width: usize, columns: &[Tap]) -> Vec<u8> {
    let mut out = vec![0; rgba.len() / width * columns.len()];
    for (src_row, out_row) in rgba.chunks_exact(width * 4).zip(out.chunks_exact_mut(columns.len() * 4)) {
        for (tap, out) in columns.iter().zip(out_row.chunks_exact_mut(4)) {
            let src = &src_row[tap.first * 4..(tap.first + tap.weights.len()) * 4];
            let [mut r, mut g, mut b, mut a] = [WEIGHT_ONE / 2; 4];
            for (&weight, pixel) in tap.weights.iter().zip(src.chunks_exact(4)) {
                r += u32::from(weight) * u32::from(pixel[0]);
                g += u32::from(weight) * u32::from(pixel[1]);
                b += u32::from(weight) * u32::from(pixel[2]);
                a += u32::from(weight) * u32::from(pixel[3]);
            }
            out.copy_from_slice(&[r, g, b, a].map(|sum| (sum / WEIGHT_ONE) as u8));
        }
    }
    out
}

/// Resamples rows of `stride` bytes to one row per tap in `rows`.
fn scale_rows(bytes: &[u8], stride: usize, rows: &[Tap]) -> Vec<u8> {
    let mut out = vec![0; stride * rows.len()];
    let mut acc = vec![0u32; stride];
    for (tap, out_row) in rows.iter().zip(out.chunks_exact_mut(stride)) {
        acc.fill(WEIGHT_ONE / 2);
        let src_rows = bytes[tap.first * stride..].chunks_exact(stride);
        for (&weight, src_row) in tap.weights.iter().zip(src_rows) {
            for (acc, &value) in acc.iter_mut().zip(src_row) {
                *acc += u32::from(weight) * u32::from(value);
            }
        }
        for (out, &acc) in out_row.iter_mut().zip(&acc) {
            *out = (acc / WEIGHT_ONE) as u8;
        }
    }
    out
}

/// How one output column (or row) is made: `weights[k]` of input `first + k`, in units of
/// [`WEIGHT_ONE`], summing to exactly `WEIGHT_ONE`.
struct Tap {
    first: usize,
    weights: Vec<u16>,
}

/// The taps that map `src` samples onto `dst` samples along one axis; both are non-zero.
fn taps(src: usize, dst: usize) -> Vec<Tap> {
    let ratio = src as f64 / dst as f64;
    (0..dst)
        .map(|i| {
            // (first input, fractional weight of each input from there on), weights summing to 1.
            let (first, weights): (usize, Vec<f64>) = if src > dst {
                // Shrinking: average the inputs under this output's footprint, by overlap.
                let (start, end) = (i as f64 * ratio, (i + 1) as f64 * ratio);
                let first = start.floor() as usize;
                let last = (end.ceil() as usize).min(src) - 1;
                let weights = (first..=last)
                    .map(|k| ((end.min(k as f64 + 1.0) - start.max(k as f64)) / ratio).max(0.0))
                    .collect();
                (first, weights)
            } else {
                // Enlarging: interpolate between the two nearest inputs, pixel centres aligned.
                let x = ((i as f64 + 0.5) * ratio - 0.5).clamp(0.0, (src - 1) as f64);
                let first = x.floor() as usize;
                let frac = x - first as f64;
                if first + 1 < src { (first, vec![1.0 - frac, frac]) } else { (first, vec![1.0]) }
            };
            // Round the running total rather than each weight, so the fixed-point weights
            // never go negative and always add up to exactly WEIGHT_ONE.
            let total: f64 = weights.iter().sum();
            let mut running = 0.0;
            let mut previous = 0;
            let mut weights: Vec<u16> = weights
                .iter()
                .map(|weight| {
                    running += weight / total;
                    let rounded =
                        ((running * f64::from(WEIGHT_ONE)).round() as u32).clamp(previous, WEIGHT_ONE);
                    let fixed = rounded - previous;
                    previous = rounded;
                    fixed as u16
                })
                .collect();
            if let Some(last) = weights.last_mut() {
                *last += (WEIGHT_ONE - previous) as u16;
            }
            Tap { first, weights }
        })
        .collect()
}

/// Refuses a frame whose buffer does not match its size, or that has no pixels.
fn check_frame(frame: &VideoFrame) -> Result<(), CodecError> {
    let expected = (frame.width as usize).checked_mul(frame.height as usize).and_then(|n| n.checked_mul(4));
    if frame.width == 0 || frame.height == 0 || expected != Some(frame.rgba.len()) {
        return Err(CodecError::BadVideoFrame {
            width: frame.width,
            height: frame.height,
            len: frame.rgba.len(),
        });
    }
    Ok(())
}

fn new_decompressor() -> Decompressor {
    let mut decompressor =
        Decompressor::new().expect("TurboJPEG fails to start a decompressor only when out of memory");
    decompressor.set_scan_limit(MAX_SCANS).expect("a positive scan limit is a valid TurboJPEG setting");
    decompressor
}

fn header_size(header: &DecompressHeader) -> Result<(u32, u32), CodecError> {
    match (u32::try_from(header.width), u32::try_from(header.height)) {
        (Ok(width), Ok(height)) if width > 0 && height > 0 => Ok((width, height)),
        _ => Err(CodecError::BadJpeg(format!(
            "the header declares a {}x{} image",
            header.width, header.height
        ))),
    }
}

fn bad_header(error: turbojpeg::Error) -> CodecError {
    match error {
        // libjpeg reports data that ends before any frame header as a valid "tables only"
        // stream, with no size; the crate then fails to convert the missing size.
        turbojpeg::Error::IntegerOverflow(_) => {
            CodecError::BadJpeg("the data ends before its frame header (cut short, or tables only)".into())
        }
        other => bad_jpeg(other),
    }
}

fn bad_jpeg(error: turbojpeg::Error) -> CodecError {
    match error {
        // The crate prefixes libjpeg's own message with "TurboJPEG error: ".
        turbojpeg::Error::TurboJpegError(message) => CodecError::BadJpeg(message),
        other => CodecError::BadJpeg(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SMPTE-like bars: white, yellow, cyan, green, magenta, red, blue, black.
    const BARS: [[u8; 3]; 8] = [
        [235, 235, 235],
        [235, 235, 16],
        [16, 235, 235],
        [16, 235, 16],
        [235, 16, 235],
        [235, 16, 16],
        [16, 16, 235],
        [16, 16, 16],
    ];

    fn colour_bars(width: u32, height: u32) -> VideoFrame {
        let mut rgba = Vec::with_capacity(width as usize * height as usize * 4);
        for _y in 0..height {
            for x in 0..width {
                let [r, g, b] = BARS[(x * 8 / width) as usize];
                rgba.extend_from_slice(&[r, g, b, 255]);
            }
        }
        VideoFrame { width, height, rgba }
    }

    /// Small seeded generator for the fuzz loops; no need for a crate.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u32
        }

        fn below(&mut self, n: usize) -> usize {
            self.next() as usize % n
        }
    }

    /// A frame with gradients, noise and edges, so JPEG sizes are like a camera's.
    fn textured(width: u32, height: u32, seed: u64) -> VideoFrame {
        let mut lcg = Lcg(seed);
        let mut rgba = Vec::with_capacity(width as usize * height as usize * 4);
        for y in 0..height {
            for x in 0..width {
                let noise = (lcg.next() % 24) as i32 - 12;
                let edge = if (x / 40 + y / 40) % 2 == 0 { 40 } else { 0 };
                let channel = |base: u32| (base as i32 + noise + edge).clamp(0, 255) as u8;
                rgba.extend_from_slice(&[
                    channel(x * 200 / width),
                    channel(y * 200 / height),
                    channel(100 + (x + y) * 50 / (width + height)),
                    255,
                ]);
            }
        }
        VideoFrame { width, height, rgba }
    }

    fn encode(frame: &VideoFrame, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        JpegEncoder::new(quality).unwrap().encode(frame, &mut out).unwrap();
        out
    }

    fn assert_close(got: [u8; 4], want: [u8; 3], tolerance: u8, at: &str) {
        for c in 0..3 {
            assert!(got[c].abs_diff(want[c]) <= tolerance, "{at}: got {got:?}, want {want:?} ± {tolerance}");
        }
        assert_eq!(got[3], 255, "{at}: alpha");
    }

    /// Offset of the first SOF0 (baseline frame header) marker in a JPEG we made.
    fn sof0_at(jpeg: &[u8]) -> usize {
        jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("our encoder writes a baseline SOF0")
    }

    #[test]
    fn colour_bars_survive_a_round_trip() {
        let frame = colour_bars(640, 480);
        let jpeg = encode(&frame, DEFAULT_JPEG_QUALITY);
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "starts with SOI");
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9], "ends with EOI");

        let decoded = JpegDecoder::default().decode(&jpeg).unwrap();
        assert_eq!((decoded.width, decoded.height), (640, 480));
        assert_eq!(decoded.rgba.len(), 640 * 480 * 4);
        for (bar, colour) in BARS.iter().enumerate() {
            let x = bar as u32 * 80 + 40;
            for y in [8, 240, 470] {
                assert_close(decoded.pixel(x, y).unwrap(), *colour, 10, &format!("bar {bar} at ({x}, {y})"));
            }
        }
        assert!(decoded.rgba.chunks_exact(4).all(|p| p[3] == 255), "alpha is opaque everywhere");
    }

    #[test]
    fn encoder_output_is_baseline_420_and_replaces_the_buffer() {
        let frame = textured(320, 240, 1);
        let mut encoder = JpegEncoder::new(DEFAULT_JPEG_QUALITY).unwrap();
        let mut out = vec![0xAB; 1_000_000];
        encoder.encode(&frame, &mut out).unwrap();
        let header = turbojpeg::read_header(&out).unwrap();
        assert_eq!(header.subsamp, Subsamp::Sub2x2);
        assert!(!header.is_progressive && !header.is_arithmetic && !header.is_lossless);
        assert_eq!(&out[..2], &[0xFF, 0xD8], "the old content is gone, not appended to");

        // The same encoder, a different size next: still right.
        let first_len = out.len();
        encoder.encode(&textured(64, 48, 2), &mut out).unwrap();
        assert!(out.len() < first_len);
        assert_eq!(JpegDecoder::default().read_header(&out).unwrap(), (64, 48));
    }

    #[test]
    fn header_gives_the_size_without_decoding() {
        let decoder = JpegDecoder::default();
        for (width, height) in [(640, 480), (1280, 720), (17, 9), (1, 1)] {
            let jpeg = encode(&VideoFrame::filled(width, height, [10, 200, 30, 255]), 50);
            assert_eq!(decoder.read_header(&jpeg).unwrap(), (width, height));
        }
        let error = decoder.read_header(b"GIF89a not a jpeg at all").unwrap_err();
        assert!(matches!(&error, CodecError::BadJpeg(message) if message.contains("Not a JPEG")), "{error}");
        assert!(matches!(decoder.read_header(&[]), Err(CodecError::BadJpeg(_))));
    }

    #[test]
    fn a_real_frame_over_the_limit_is_refused() {
        let jpeg = encode(&VideoFrame::filled(2000, 1200, [90, 90, 90, 255]), 50);
        let mut decoder = JpegDecoder::default();
        assert_eq!(decoder.read_header(&jpeg).unwrap(), (2000, 1200));
        let error = decoder.decode(&jpeg).unwrap_err();
        assert!(
            matches!(
                error,
                CodecError::FrameTooLarge { width: 2000, height: 1200, max_width: 1920, max_height: 1080 }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "a 2000x1200 video frame is larger than the 1920x1080 this decoder accepts"
        );
        // Both limits count on their own, and the same frame passes a decoder that allows it.
        assert!(matches!(JpegDecoder::new(1999, 4000).decode(&jpeg), Err(CodecError::FrameTooLarge { .. })));
        assert!(matches!(JpegDecoder::new(4000, 1199).decode(&jpeg), Err(CodecError::FrameTooLarge { .. })));
        assert_eq!(JpegDecoder::new(2000, 1200).decode(&jpeg).unwrap().width, 2000);
    }

    #[test]
    fn a_header_claiming_a_huge_frame_is_refused_before_any_allocation() {
        // A 16x16 JPEG whose SOF claims 60000x60000: decoding it would need 14.4 GB of RGBA.
        // The test passes quickly and without running out of memory only because the
        // decoder refuses it from the header.
        let mut jpeg = encode(&colour_bars(16, 16), 75);
        let sof = sof0_at(&jpeg);
        // FF C0, length (2), precision (1), height (2), width (2).
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        let mut decoder = JpegDecoder::default();
        assert_eq!(decoder.read_header(&jpeg).unwrap(), (60_000, 60_000));
        assert!(matches!(
            decoder.decode(&jpeg),
            Err(CodecError::FrameTooLarge { width: 60_000, height: 60_000, .. })
        ));
        assert!(matches!(decoder.decode_downscaled(&jpeg, 1, 1), Err(CodecError::FrameTooLarge { .. })));
        // A zero height is malformed, not small.
        jpeg[sof + 5..sof + 7].copy_from_slice(&[0, 0]);
        assert!(matches!(decoder.decode(&jpeg), Err(CodecError::BadJpeg(_))));
    }

    #[test]
    fn a_truncated_frame_is_an_error_wherever_it_is_cut() {
        let jpeg = encode(&textured(96, 64, 3), DEFAULT_JPEG_QUALITY);
        let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let mut decoder = JpegDecoder::default();
        for len in 0..jpeg.len() {
            match decoder.decode(&jpeg[..len]) {
                Err(CodecError::BadJpeg(_)) => {}
                other => panic!("cut to {len} of {} bytes: {other:?}", jpeg.len()),
            }
            // The header alone may be whole; then it must say the right size.
            match decoder.read_header(&jpeg[..len]) {
                Ok(size) => assert!(len > sos && size == (96, 64), "cut to {len}: {size:?}"),
                Err(error) => assert!(matches!(error, CodecError::BadJpeg(_)), "cut to {len}: {error:?}"),
            }
            if len % 7 == 0 {
                // After a good frame the handle holds its header; a cut frame must not reuse it.
                decoder.decode(&jpeg).unwrap();
            }
        }
        let error = decoder.read_header(&jpeg[..10]).unwrap_err();
        assert!(error.to_string().contains("ends before its frame header"), "{error}");
        // Cut inside the scan data: the message says what happened.
        let error = decoder.decode(&jpeg[..jpeg.len() * 2 / 3]).unwrap_err();
        assert!(error.to_string().contains("Premature end of JPEG file"), "{error}");
        // And the decoder still decodes a whole frame afterwards.
        assert_eq!(decoder.decode(&jpeg).unwrap().width, 96);
    }

    #[test]
    fn a_bad_header_does_not_break_the_next_frame() {
        let good = encode(&colour_bars(64, 48), DEFAULT_JPEG_QUALITY);
        // A quantisation table numbered 15: libjpeg stops inside the header with an error.
        let mut bad_table = good.clone();
        let dqt = bad_table.windows(2).position(|w| w == [0xFF, 0xDB]).unwrap();
        bad_table[dqt + 4] = 0x0F;
        let mut decoder = JpegDecoder::default();
        let error = decoder.decode(&bad_table).unwrap_err();
        assert_eq!(error.to_string(), "not a usable JPEG frame (dropped): Bogus DQT index 15");
        assert_eq!(decoder.decode(&good).unwrap().width, 64, "the frame after a bad table");
        for cut in [10, 100, 300] {
            assert!(matches!(decoder.decode(&good[..cut]), Err(CodecError::BadJpeg(_))), "cut to {cut}");
            assert!(matches!(decoder.decode_downscaled(&bad_table, 8, 8), Err(CodecError::BadJpeg(_))));
            assert_eq!(decoder.decode(&good).unwrap().width, 64, "the frame after one cut to {cut}");
        }
    }

    #[test]
    fn decode_into_reuses_the_frame_and_empties_it_on_error() {
        let big = encode(&colour_bars(320, 240), DEFAULT_JPEG_QUALITY);
        let small = encode(&colour_bars(64, 48), DEFAULT_JPEG_QUALITY);
        let mut decoder = JpegDecoder::default();
        let mut frame = VideoFrame { width: 0, height: 0, rgba: Vec::new() };
        decoder.decode_into(&big, &mut frame).unwrap();
        assert_eq!(frame, decoder.decode(&big).unwrap());
        let capacity = frame.rgba.capacity();
        decoder.decode_into(&small, &mut frame).unwrap();
        assert_eq!((frame.width, frame.height, frame.rgba.len()), (64, 48, 64 * 48 * 4));
        assert_close(frame.pixel(4, 24).unwrap(), BARS[0], 10, "white bar");
        assert!(decoder.decode_into(&big[..big.len() / 2], &mut frame).is_err());
        assert_eq!((frame.width, frame.height, frame.rgba.len()), (0, 0, 0), "no partial picture");
        assert_eq!(frame.rgba.capacity(), capacity, "the allocation is kept");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut lcg = Lcg(0x5eed);
        let mut decoder = JpegDecoder::new(640, 480);
        for round in 0..2000 {
            let len = lcg.below(4096);
            let mut bytes: Vec<u8> = (0..len).map(|_| lcg.next() as u8).collect();
            if round % 2 == 0 && len >= 2 {
                // Half start like a JPEG, to get past the first check.
                bytes[..2].copy_from_slice(&[0xFF, 0xD8]);
            }
            let _ = decoder.read_header(&bytes);
            if let Ok(frame) = decoder.decode(&bytes) {
                assert_eq!(frame.rgba.len(), frame.width as usize * frame.height as usize * 4);
            }
        }
    }

    #[test]
    fn corrupted_frames_never_panic_and_never_pass_the_limits() {
        let jpeg = encode(&textured(160, 120, 4), DEFAULT_JPEG_QUALITY);
        let mut lcg = Lcg(42);
        let mut decoder = JpegDecoder::new(640, 480);
        let (mut decoded, mut refused) = (0, 0);
        for round in 0..1500 {
            let mut bytes = jpeg.clone();
            for _ in 0..1 + lcg.below(8) {
                // Half the rounds hit the first 700 bytes, where the headers and tables are.
                let at =
                    if round % 2 == 0 { lcg.below(700.min(bytes.len())) } else { lcg.below(bytes.len()) };
                bytes[at] = lcg.next() as u8;
            }
            if round % 5 == 0 {
                bytes.truncate(lcg.below(bytes.len()));
            }
            match decoder.decode(&bytes) {
                Ok(frame) => {
                    decoded += 1;
                    assert!(frame.width <= 640 && frame.height <= 480, "{frame:?}");
                    assert_eq!(frame.rgba.len(), frame.width as usize * frame.height as usize * 4);
                }
                Err(_) => refused += 1,
            }
            let _ = decoder.decode_downscaled(&bytes, 40, 30);
        }
        // Some damage lands in the scan data and goes unnoticed by libjpeg (a changed
        // coefficient is still a valid code); most is caught.
        assert!(refused > 0 && decoded + refused == 1500, "decoded {decoded}, refused {refused}");
        assert_eq!(decoder.decode(&jpeg).unwrap().width, 160, "still decodes after all that");
    }

    #[test]
    fn higher_quality_makes_bigger_frames() {
        let frame = textured(320, 240, 5);
        let sizes: Vec<usize> = [10, 30, 50, 70, 90, 100].iter().map(|&q| encode(&frame, q).len()).collect();
        assert!(sizes.windows(2).all(|pair| pair[0] < pair[1]), "sizes by quality: {sizes:?}");
        assert!(sizes[5] > 3 * sizes[0], "sizes by quality: {sizes:?}");
    }

    #[test]
    fn quality_is_checked_and_settable() {
        assert!(matches!(JpegEncoder::new(0), Err(CodecError::BadJpegQuality(0))));
        let mut encoder = JpegEncoder::new(DEFAULT_JPEG_QUALITY).unwrap();
        assert!(matches!(encoder.set_quality(101), Err(CodecError::BadJpegQuality(101))));
        assert_eq!(encoder.quality(), DEFAULT_JPEG_QUALITY, "a refused quality changes nothing");

        let frame = textured(320, 240, 6);
        let mut high = Vec::new();
        encoder.encode(&frame, &mut high).unwrap();
        encoder.set_quality(20).unwrap();
        let mut low = Vec::new();
        encoder.encode(&frame, &mut low).unwrap();
        assert_eq!(encoder.quality(), 20);
        assert!(low.len() < high.len() / 2, "{} vs {}", low.len(), high.len());
    }

    #[test]
    fn a_frame_that_does_not_match_its_size_is_refused() {
        let mut encoder = JpegEncoder::new(DEFAULT_JPEG_QUALITY).unwrap();
        let mut out = Vec::new();
        let short = VideoFrame { width: 4, height: 4, rgba: vec![0; 63] };
        let error = encoder.encode(&short, &mut out).unwrap_err();
        assert!(matches!(error, CodecError::BadVideoFrame { width: 4, height: 4, len: 63 }), "{error:?}");
        let empty = VideoFrame { width: 0, height: 4, rgba: Vec::new() };
        assert!(matches!(encoder.encode(&empty, &mut out), Err(CodecError::BadVideoFrame { .. })));
    }

    #[test]
    fn decode_downscaled_picks_the_smallest_scale_that_covers() {
        let jpeg = encode(&colour_bars(640, 480), DEFAULT_JPEG_QUALITY);
        let mut decoder = JpegDecoder::default();
        let cases = [
            ((160, 120), (160, 120)),
            ((200, 100), (240, 180)),
            ((1, 1), (80, 60)),
            ((2000, 2000), (640, 480)),
        ];
        for ((min_width, min_height), want) in cases {
            let frame = decoder.decode_downscaled(&jpeg, min_width, min_height).unwrap();
            assert_eq!((frame.width, frame.height), want, "for at least {min_width}x{min_height}");
            assert_close(frame.pixel(frame.width / 16, frame.height / 2).unwrap(), BARS[0], 12, "white bar");
        }
        // A full decode afterwards is full size again.
        assert_eq!(decoder.decode(&jpeg).unwrap().width, 640);
    }

    #[test]
    fn scale_gives_the_asked_size_and_keeps_flat_colour_flat() {
        let colour = [200, 100, 50, 255];
        let flat = VideoFrame::filled(1280, 720, colour);
        for (width, height) in
            [(640, 360), (320, 180), (333, 177), (1, 1), (1920, 1080), (1281, 719), (7, 1000)]
        {
            let scaled = scale(&flat, width, height);
            assert_eq!((scaled.width, scaled.height), (width, height));
            assert_eq!(scaled.rgba.len(), width as usize * height as usize * 4);
            assert!(scaled.rgba.chunks_exact(4).all(|p| p == colour), "{width}x{height} is not flat");
        }
        assert_eq!(scale(&flat, 0, 10).rgba.len(), 0);
        assert_eq!(scale(&flat, 1280, 720), flat);
    }

    #[test]
    fn scale_keeps_the_picture() {
        let bars = colour_bars(640, 480);
        for (width, height) in [(320, 240), (160, 120), (1280, 960), (100, 75), (640, 100), (200, 480)] {
            let scaled = scale(&bars, width, height);
            for (bar, colour) in BARS.iter().enumerate() {
                let x = (bar as u32 * 2 + 1) * width / 16;
                assert_close(
                    scaled.pixel(x, height / 2).unwrap(),
                    *colour,
                    0,
                    &format!("{width}x{height} bar {bar}"),
                );
            }
        }
        // A 2x2 checkerboard averaged to one pixel is mid-grey.
        let mut board = VideoFrame::filled(2, 2, [0, 0, 0, 255]);
        board.rgba[..4].copy_from_slice(&[255, 255, 255, 255]);
        board.rgba[12..].copy_from_slice(&[255, 255, 255, 255]);
        let one = scale(&board, 1, 1);
        assert_close(one.pixel(0, 0).unwrap(), [128, 128, 128], 1, "average");
    }
}
