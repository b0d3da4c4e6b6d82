//! JPEG encode and decode time per frame: `cargo bench -p chinwag-codec --bench jpeg`.
//!
//! A plain timing loop rather than a benchmark framework, like the Opus bench. For each size it
//! measures Chinwag's turbojpeg encoder and decoder against the pure-Rust pair the project
//! would otherwise use (`jpeg-encoder` with its AVX2 path, `zune-jpeg`), in the same run, on
//! the same camera-like test picture, at the default quality with 4:2:0 chroma. Both decoders
//! decode the same turbojpeg output. The figure is the median of many frames, which a
//! shared, busy machine disturbs less than the mean.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chinwag_codec::picture::camera_like;
use chinwag_codec::{DEFAULT_JPEG_QUALITY, JpegDecoder, JpegEncoder, VideoFrame, scale};
use jpeg_encoder::{ColorType, SamplingFactor};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// How long each measurement runs, after a short warm-up.
const BUDGET: Duration = Duration::from_millis(1500);
/// The per-frame time the video issue asks for at 720p, encode and decode each.
const GOAL_720P_MS: f64 = 2.0;

/// Median milliseconds per call of `f`, run for [`BUDGET`] after a few warm-up calls.
fn median_ms(mut f: impl FnMut()) -> (f64, usize) {
    for _ in 0..3 {
        f();
    }
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < BUDGET || times.len() < 10 {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times.len())
}

fn main() {
    let quality = DEFAULT_JPEG_QUALITY;
    println!("JPEG at quality {quality}, 4:2:0, RGBA in and out; median ms/frame (frames timed)");
    for (width, height) in [(640, 480), (1280, 720)] {
        let frame = camera_like(width, height, 0);

        let mut encoder = JpegEncoder::new(quality).unwrap();
        let mut jpeg = Vec::new();
        let (ours_enc, n_ours_enc) = median_ms(|| encoder.encode(black_box(&frame), &mut jpeg).unwrap());

        let mut baseline_jpeg = Vec::new();
        let (base_enc, n_base_enc) = median_ms(|| {
            baseline_jpeg.clear();
            let mut baseline = jpeg_encoder::Encoder::new(&mut baseline_jpeg, quality);
            baseline.set_sampling_factor(SamplingFactor::F_2_2);
            baseline.encode(black_box(&frame.rgba), width as u16, height as u16, ColorType::Rgba).unwrap();
        });

        let mut decoder = JpegDecoder::default();
        let (ours_dec, n_ours_dec) = median_ms(|| {
            black_box(decoder.decode(black_box(&jpeg)).unwrap());
        });
        let mut reused = VideoFrame { width: 0, height: 0, rgba: Vec::new() };
        let (ours_into, n_ours_into) =
            median_ms(|| decoder.decode_into(black_box(&jpeg), &mut reused).unwrap());
        let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGBA);
        let (base_dec, n_base_dec) = median_ms(|| {
            let mut baseline =
                zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(black_box(&jpeg)), options);
            black_box(baseline.decode().unwrap());
        });
        // Both decoders must agree on what they decoded, or the comparison means nothing.
        let ours = decoder.decode(&jpeg).unwrap();
        let theirs = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(&jpeg), options).decode().unwrap();
        assert_eq!(ours.rgba.len(), theirs.len(), "both decoders give RGBA of the same size");

        let kbit_per_s = jpeg.len() as f64 * 8.0 * 30.0 / 1000.0;
        println!("{width}x{height}:");
        println!(
            "  encode  turbojpeg {ours_enc:6.3} ms ({n_ours_enc})   jpeg-encoder {base_enc:6.3} ms ({n_base_enc})   baseline/turbojpeg {:.1}x",
            base_enc / ours_enc
        );
        println!(
            "  decode  turbojpeg {ours_dec:6.3} ms ({n_ours_dec})   zune-jpeg    {base_dec:6.3} ms ({n_base_dec})   baseline/turbojpeg {:.1}x",
            base_dec / ours_dec
        );
        println!("  decode  turbojpeg into a reused frame (decode_into) {ours_into:6.3} ms ({n_ours_into})");
        println!(
            "  size    turbojpeg {} bytes/frame = {:.2} Mbit/s at 30 fps   (jpeg-encoder: {} bytes/frame)",
            jpeg.len(),
            kbit_per_s / 1000.0,
            baseline_jpeg.len()
        );
        if (width, height) == (640, 480) {
            let sizes: Vec<String> = [50, 60, 70, 75, 80, 85, 90]
                .iter()
                .map(|&q| {
                    let mut encoder = JpegEncoder::new(q).unwrap();
                    encoder.encode(&frame, &mut jpeg).unwrap();
                    format!("q{q} {}", jpeg.len())
                })
                .collect();
            println!("  bytes/frame by quality: {}", sizes.join(", "));
        }
        if (width, height) == (1280, 720) {
            let verdict = |ms: f64| if ms <= GOAL_720P_MS { "met" } else { "MISSED" };
            println!(
                "  goal    encode <= {GOAL_720P_MS} ms: {}, decode <= {GOAL_720P_MS} ms: {} (decode_into: {})",
                verdict(ours_enc),
                verdict(ours_dec),
                verdict(ours_into)
            );
            let (scale_ms, n_scale) = median_ms(|| {
                black_box(scale(black_box(&frame), 640, 360));
            });
            let (small_ms, n_small) = median_ms(|| {
                black_box(decoder.decode_downscaled(black_box(&jpeg), 320, 180).unwrap());
            });
            println!(
                "  scale   1280x720 -> 640x360 in Rust {scale_ms:6.3} ms ({n_scale});   decode_downscaled to 320x180 {small_ms:6.3} ms ({n_small})"
            );
        }
    }
}
