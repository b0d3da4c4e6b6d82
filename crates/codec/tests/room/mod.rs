//! A synthetic room for the voice-processing tests and benchmark: a far-end talker played
//! through a loudspeaker whose sound reaches the microphone through a reverberant room, a
//! near-end talker, and background noise. Everything is generated from seeds.
//!
//! The talkers are source-filter speech: a glottal pulse train with a gliding pitch through
//! three vowel formants, with noise bursts for fricatives, cut into syllables, words and pauses.
//! It is not intelligible, but it has what the algorithms look at: harmonics, formants,
//! broadband bursts, and a level that comes and goes.

use std::f64::consts::PI;
use std::ops::Range;
use std::time::Duration;

use chinwag_codec::{CaptureAnalysis, PROCESSING_FRAME_SAMPLES, VoiceProcessor};
use realfft::RealFftPlanner;

pub const RATE: usize = 48_000;
pub const FRAME: usize = PROCESSING_FRAME_SAMPLES;

/// A talker's voice.
#[derive(Debug, Clone)]
pub struct Talker {
    /// The range the pitch glides in, in Hz.
    pub pitch_hz: Range<f64>,
    /// Formant frequencies relative to an adult male's.
    pub formant_scale: f64,
    /// RMS level of the talker's speech, pauses included, in dBFS.
    pub level_dbfs: f64,
    pub seed: u64,
}

impl Talker {
    /// A low voice for the far end.
    pub fn far_end() -> Self {
        Self { pitch_hz: 95.0..150.0, formant_scale: 1.0, level_dbfs: -20.0, seed: 1 }
    }

    /// A higher voice for the near end, quieter at the microphone than the loudspeaker plays.
    pub fn near_end() -> Self {
        Self { pitch_hz: 180.0..280.0, formant_scale: 1.17, level_dbfs: -26.0, seed: 2 }
    }
}

/// Who talks when, and how the echo path behaves.
#[derive(Debug, Clone)]
pub struct Script {
    pub duration: Duration,
    pub far_end_talks: Vec<Range<Duration>>,
    pub near_end_talks: Vec<Range<Duration>>,
    /// The loudspeaker-to-microphone delay before the room's impulse response, from the given
    /// time on; the first entry starts at zero.
    pub echo_delays: Vec<(Duration, Duration)>,
    /// How long the room's impulse response rings: it is 60 dB down at its end.
    pub reverb_tail: Duration,
    /// Echo level relative to the far end, in dB.
    pub echo_level_db: f64,
    /// Level of the white background noise at the microphone, in dBFS.
    pub noise_dbfs: f64,
    pub room_seed: u64,
}

impl Script {
    /// A call: the far end talks alone from 0 to 7 s, both talk from 7 to 10 s, the near end
    /// talks alone from 10 to 12 s, and only the room's noise is heard from 12 to 14 s. The
    /// echo is 10 dB below the far end, 60 ms late, and rings for 150 ms; the noise is white.
    pub fn call() -> Self {
        Self {
            duration: secs(14.0),
            far_end_talks: vec![secs(0.0)..secs(10.0)],
            near_end_talks: vec![secs(7.0)..secs(12.0)],
            echo_delays: vec![(Duration::ZERO, ECHO_DELAY)],
            reverb_tail: Duration::from_millis(150),
            echo_level_db: -10.0,
            noise_dbfs: -50.0,
            room_seed: 3,
        }
    }
}

/// The echo path delay of [`Script::call`], which the devices report too.
pub const ECHO_DELAY: Duration = Duration::from_millis(60);

/// The parts of [`Script::call`]. The far end talks alone, after three seconds in which the
/// echo canceller converges.
pub const FAR_END_ONLY: Range<Duration> = Duration::from_secs(3)..Duration::from_secs(7);
pub const DOUBLE_TALK: Range<Duration> = Duration::from_secs(7)..Duration::from_secs(10);
pub const NEAR_END_ONLY: Range<Duration> = Duration::from_secs(10)..Duration::from_secs(12);
/// Background noise alone, after the near end's last syllable has faded.
pub const NOISE_ONLY: Range<Duration> = Duration::from_millis(12_500)..Duration::from_secs(14);

/// The signals of one run, sample-aligned: `mic` is `echo + near_end + noise`.
#[derive(Debug, Clone)]
pub struct Room {
    pub far_end: Vec<f32>,
    pub near_end: Vec<f32>,
    pub echo: Vec<f32>,
    pub noise: Vec<f32>,
    pub mic: Vec<f32>,
}

impl Room {
    pub fn new(script: &Script, far_talker: &Talker, near_talker: &Talker) -> Self {
        let n = samples(script.duration) / FRAME * FRAME;
        let far_end = gate(speech(far_talker, n), &script.far_end_talks);
        let near_end = gate(speech(near_talker, n), &script.near_end_talks);

        let mut rng = Xorshift::new(script.room_seed);
        let reverberated = convolve(&far_end, &impulse_response(&mut rng, script.reverb_tail));
        let mut echo = vec![0.0f32; n];
        for (t, sample) in echo.iter_mut().enumerate() {
            let delay = samples(current(&script.echo_delays, t));
            if let Some(source) = t.checked_sub(delay) {
                *sample = reverberated[source];
            }
        }
        let gain = db_to_amplitude(script.echo_level_db) * rms(&far_end) / rms(&echo);
        echo.iter_mut().for_each(|s| *s *= gain as f32);

        // Uniform white noise: its RMS is the half-width over the square root of 3.
        let half_width = db_to_amplitude(script.noise_dbfs) * 3f64.sqrt();
        let noise: Vec<f32> = (0..n).map(|_| (rng.symmetric() * half_width) as f32).collect();

        let mic = (0..n).map(|t| echo[t] + near_end[t] + noise[t]).collect();
        Self { far_end, near_end, echo, noise, mic }
    }

    pub fn n_frames(&self) -> usize {
        self.mic.len() / FRAME
    }
}

/// The processor's output for a whole room, and its analysis of every frame.
#[derive(Debug, Clone)]
pub struct Processed {
    pub out: Vec<f32>,
    pub analyses: Vec<CaptureAnalysis>,
}

/// Feeds the room through `processor` 10 ms at a time, rendering each far-end frame before
/// capturing the microphone frame, as on a real device. `before_frame` runs before each frame
/// with its index, for changing settings mid-run.
pub fn process(
    processor: &mut VoiceProcessor,
    room: &Room,
    mut before_frame: impl FnMut(&mut VoiceProcessor, usize),
) -> Processed {
    let mut out = room.mic.clone();
    let mut analyses = Vec::with_capacity(room.n_frames());
    for (frame_idx, (far, mic)) in room.far_end.chunks(FRAME).zip(out.chunks_mut(FRAME)).enumerate() {
        before_frame(processor, frame_idx);
        processor.process_render(far).expect("frames are 10 ms");
        analyses.push(processor.process_capture(mic).expect("frames are 10 ms"));
    }
    Processed { out, analyses }
}

pub fn samples(duration: Duration) -> usize {
    (duration.as_secs_f64() * RATE as f64).round() as usize
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The sample range of a time range.
pub fn span(range: &Range<Duration>) -> Range<usize> {
    samples(range.start)..samples(range.end)
}

/// Energy of `x` in dB relative to a full-scale square wave of the same length.
pub fn level_db(x: &[f32]) -> f64 {
    10.0 * (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64 + 1e-20).log10()
}

/// How much quieter `after` is than `before`, in dB.
pub fn reduction_db(before: &[f32], after: &[f32]) -> f64 {
    level_db(before) - level_db(after)
}

fn rms(x: &[f32]) -> f64 {
    10f64.powf(level_db(x) / 20.0)
}

fn db_to_amplitude(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

/// The echo delay in force at sample `t`.
fn current(delays: &[(Duration, Duration)], t: usize) -> Duration {
    delays.iter().take_while(|(from, _)| samples(*from) <= t).last().map_or(Duration::ZERO, |d| d.1)
}

/// Keeps `x` only inside `talks`, with 20 ms fades so that no edge clicks.
fn gate(mut x: Vec<f32>, talks: &[Range<Duration>]) -> Vec<f32> {
    let fade = samples(Duration::from_millis(20)) as f32;
    for (t, sample) in x.iter_mut().enumerate() {
        let gain = talks
            .iter()
            .map(|talk| {
                let span = span(talk);
                if span.contains(&t) {
                    ((t - span.start) as f32 / fade).min((span.end - t) as f32 / fade).min(1.0)
                } else {
                    0.0
                }
            })
            .fold(0.0, f32::max);
        *sample *= gain;
    }
    x
}

/// A room impulse response: the direct sound, then reverberation with random signs and a
/// magnitude that decays by 60 dB over `tail`, carrying as much energy as the direct sound (a
/// loudspeaker about a metre from the microphone in a furnished room).
fn impulse_response(rng: &mut Xorshift, tail: Duration) -> Vec<f32> {
    let len = samples(tail);
    let decay_per_sample = (1000f64).ln() / len as f64;
    let mut response: Vec<f64> = (0..len)
        .map(|k| {
            let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
            sign * (0.5 + 0.5 * rng.uniform()) * (-decay_per_sample * k as f64).exp()
        })
        .collect();
    let reverberation = response.iter().map(|h| h * h).sum::<f64>().sqrt();
    response.iter_mut().for_each(|h| *h /= reverberation);
    response[0] = 1.0;
    response.into_iter().map(|h| h as f32).collect()
}

/// Linear convolution of `x` with `h`, cut to the length of `x`, through one large FFT.
fn convolve(x: &[f32], h: &[f32]) -> Vec<f32> {
    let len = (x.len() + h.len()).next_power_of_two();
    let mut planner = RealFftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(len);
    let inverse = planner.plan_fft_inverse(len);
    let spectrum = |signal: &[f32]| {
        let mut padded = forward.make_input_vec();
        padded.iter_mut().zip(signal).for_each(|(p, &s)| *p = f64::from(s));
        let mut spectrum = forward.make_output_vec();
        forward.process(&mut padded, &mut spectrum).expect("buffers come from the plan");
        spectrum
    };
    let mut product: Vec<_> = spectrum(x).iter().zip(&spectrum(h)).map(|(a, b)| a * b).collect();
    let mut out = inverse.make_output_vec();
    inverse.process(&mut product, &mut out).expect("buffers come from the plan");
    out[..x.len()].iter().map(|&s| (s / len as f64) as f32).collect()
}

/// Formant frequencies of a few vowels, in Hz, for an adult male voice.
const VOWELS: [[f64; 3]; 6] = [
    [730.0, 1090.0, 2440.0],
    [270.0, 2290.0, 3010.0],
    [300.0, 870.0, 2240.0],
    [530.0, 1840.0, 2480.0],
    [570.0, 840.0, 2410.0],
    [660.0, 1720.0, 2410.0],
];
const FORMANT_BANDWIDTHS: [f64; 3] = [90.0, 110.0, 170.0];
const FORMANT_GAINS: [f64; 3] = [1.0, 0.6, 0.3];

/// `n` samples of one talker speaking without a break longer than a phrase pause.
fn speech(talker: &Talker, n: usize) -> Vec<f32> {
    let mut rng = Xorshift::new(talker.seed);
    let ms = |ms: f64| samples(Duration::from_secs_f64(ms / 1000.0));
    let mut out = vec![0.0f64; n];
    let mut formants = [Resonator::default(), Resonator::default(), Resonator::default()];
    let mut hiss = Resonator::default();
    let mut formant_hz = VOWELS[0].map(|f| f * talker.formant_scale);
    let (mut phase, mut glottis, mut period_jitter) = (0.0f64, 0.0f64, 1.0f64);
    let mut t = ms(rng.range(0.0, 200.0));
    while t < n {
        for _ in 0..2 + rng.below(5) {
            // A syllable: perhaps a fricative, then a voiced vowel with a gliding pitch.
            let fricative = if rng.uniform() < 0.4 { ms(rng.range(40.0, 90.0)) } else { 0 };
            let hiss_hz = rng.range(3500.0, 7000.0);
            let voiced = ms(rng.range(120.0, 260.0));
            let target = VOWELS[rng.below(VOWELS.len())].map(|f| f * talker.formant_scale);
            let pitch_start = rng.range(talker.pitch_hz.start, talker.pitch_hz.end);
            let pitch_end =
                (pitch_start * rng.range(0.8, 1.2)).clamp(talker.pitch_hz.start, talker.pitch_hz.end);
            let mut syllable = Vec::with_capacity(fricative + voiced);
            for i in 0..fricative {
                let envelope = (PI * i as f64 / fricative as f64).sin();
                syllable.push(envelope * hiss.process(rng.symmetric(), hiss_hz, 2500.0));
            }
            normalise(&mut syllable, 0.3);
            for i in 0..voiced {
                let progress = i as f64 / voiced as f64;
                let envelope = (progress / 0.15).min((1.0 - progress) / 0.25).min(1.0);
                // Each glottal period is a little irregular in length (jitter) and strength
                // (shimmer), as in a real voice.
                phase += (pitch_start + (pitch_end - pitch_start) * progress) * period_jitter / RATE as f64;
                let pulse = if phase >= 1.0 {
                    phase -= 1.0;
                    period_jitter = 1.0 + 0.02 * rng.symmetric();
                    1.0 + 0.1 * rng.symmetric()
                } else {
                    0.0
                };
                // The glottal flow rolls off above the pitch; a little breath noise rides on it.
                glottis = 0.95 * glottis + pulse + 0.01 * rng.symmetric();
                // Parallel formants, falling in strength, that move towards the vowel's over
                // about 20 ms, as the mouth does.
                let mut x = 0.0;
                for (k, resonator) in formants.iter_mut().enumerate() {
                    formant_hz[k] += (target[k] - formant_hz[k]) * 0.001;
                    x += FORMANT_GAINS[k] * resonator.process(glottis, formant_hz[k], FORMANT_BANDWIDTHS[k]);
                }
                syllable.push(x * envelope);
            }
            // Syllables vary in loudness by a few dB either way.
            normalise(&mut syllable[fricative..], db_to_amplitude(rng.range(-4.0, 4.0)));
            for (i, sample) in syllable.into_iter().enumerate() {
                if let Some(slot) = out.get_mut(t + i) {
                    *slot = sample;
                }
            }
            t += fricative + voiced + ms(rng.range(30.0, 90.0));
        }
        t += ms(rng.range(200.0, 600.0));
    }
    let level = (out.iter().map(|s| s * s).sum::<f64>() / n as f64).sqrt();
    let gain = db_to_amplitude(talker.level_dbfs) / level;
    out.iter().map(|s| (s * gain) as f32).collect()
}

/// Scales `x` to an RMS of `rms`.
fn normalise(x: &mut [f64], rms: f64) {
    let level = (x.iter().map(|s| s * s).sum::<f64>() / x.len().max(1) as f64).sqrt();
    if level > 0.0 {
        x.iter_mut().for_each(|s| *s *= rms / level);
    }
}

/// A two-pole resonance, normalised to unit gain at its peak.
#[derive(Debug, Default)]
struct Resonator {
    y1: f64,
    y2: f64,
}

impl Resonator {
    fn process(&mut self, x: f64, hz: f64, bandwidth_hz: f64) -> f64 {
        let r = (-PI * bandwidth_hz / RATE as f64).exp();
        let theta = 2.0 * PI * hz / RATE as f64;
        let gain = (1.0 - r) * (1.0 - 2.0 * r * (2.0 * theta).cos() + r * r).sqrt();
        let y = gain * x + 2.0 * r * theta.cos() * self.y1 - r * r * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// A small seeded generator: xorshift64*.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..1.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in -1..1.
    pub fn symmetric(&mut self) -> f64 {
        2.0 * self.uniform() - 1.0
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
