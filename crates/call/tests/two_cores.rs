//! Two call cores through a simulated relay, in virtual time: one participant's
//! [`VoiceSender`] and video stamper, a seeded network (the jitter crate's model), and the
//! other participant's [`Playout`] and [`LipSync`]. Judged as a listener would: the voice
//! arrives, its delay measured from the played signal agrees with the mouth-to-ear the core
//! reports, and video is shown with the voice captured with it.

use std::time::{Duration, Instant};

use chinwag_call::{LipSync, MediaStamper, Playout, TICK_SAMPLES, VoiceSender};
use chinwag_codec::VoiceConfig;
use chinwag_jitter::JitterConfig;
use chinwag_jitter::sim::{Network, Stalls};
use chinwag_proto::{MediaKind, ParticipantId, RelayTime};
use rand::SeedableRng;
use rand::rngs::SmallRng;

const MS: Duration = Duration::from_millis(1);
const SPEAKER: ParticipantId = ParticipantId(7);
/// How long after the mixer computes a tick it is heard (the speaker's buffer).
const SINK_LATENCY: Duration = Duration::from_millis(20);

/// A signal whose every 50 ms has its own frequency, so that any window of it lines up with
/// the sent signal at exactly one lag.
fn hopping_tone(n_samples: usize, seed: u64) -> Vec<f32> {
    use rand::Rng as _;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut phase = 0.0f32;
    let mut hz = 300.0;
    (0..n_samples)
        .map(|n| {
            if n % 2400 == 0 {
                hz = rng.random_range(200.0..2000.0);
            }
            phase += hz * std::f32::consts::TAU / 48_000.0;
            0.3 * phase.sin()
        })
        .collect()
}

struct Call {
    sent: Vec<f32>,
    played: Vec<f32>,
    playout: Playout,
    /// (virtual time shown, capture time of the frame shown), sampled every tick.
    shown: Vec<(Duration, Duration)>,
}

fn relay_time(at: Duration) -> RelayTime {
    RelayTime::from_micros(at.as_micros() as u64 + 1_000_000)
}

fn run(network: Network, seconds: u64, seed: u64) -> Call {
    let duration = Duration::from_secs(seconds);
    let mut rng = SmallRng::seed_from_u64(seed);
    let origin = Instant::now();
    let sent = hopping_tone((seconds * 48_000) as usize, seed);

    // The sender: 20 ms voice frames, and 15 fps video whose frames carry their capture time.
    let mut voice = VoiceSender::new(VoiceConfig::default()).unwrap();
    let n = voice.frame_samples();
    let mut packets = Vec::new();
    for (idx, frame) in sent.chunks_exact(n).enumerate() {
        let at = Duration::from_micros(idx as u64 * 20_000);
        let (mut header, packet) = voice.handle_frame(frame, relay_time(at)).unwrap();
        header.sender = SPEAKER; // as the relay stamps it
        packets.push((at, header, packet.to_vec()));
    }
    let mut video = MediaStamper::new(MediaKind::Video);
    let frames: Vec<_> = (0..seconds * 15)
        .map(|idx| {
            let at = Duration::from_micros(idx * 66_667);
            (at, video.stamp(at.as_micros() as u64 * 90 / 1000, relay_time(at)))
        })
        .collect();

    let sent_at: Vec<Duration> = packets.iter().map(|(at, ..)| *at).collect();
    let audio = network.deliver(&sent_at, duration, &mut rng).arrivals;
    let video_at: Vec<Duration> = frames.iter().map(|(at, _)| *at).collect();
    let video_arrivals = network.deliver(&video_at, duration, &mut rng).arrivals;

    let mut playout = Playout::new(JitterConfig::default()).unwrap();
    playout.handle_peer_joined(SPEAKER, "Speaker");
    let mut lip_sync = LipSync::default();
    let mut played = Vec::new();
    let mut shown = Vec::new();
    let mut mix = vec![0.0; TICK_SAMPLES];
    let (mut next_audio, mut next_video) = (0, 0);
    let end = duration + Duration::from_secs(1);
    let mut now = 3 * MS;
    while now < end {
        while let Some(&(at, idx)) = audio.get(next_audio).filter(|(at, _)| *at <= now) {
            let (_, header, packet) = &packets[idx];
            playout.handle_audio(origin + at, header, packet);
            next_audio += 1;
        }
        let heard_at = relay_time(now + SINK_LATENCY);
        while let Some(&(_, idx)) = video_arrivals.get(next_video).filter(|(at, _)| *at <= now) {
            let (_, header) = frames[idx];
            // Decoding is instant here; the receiver's clock is the relay's.
            let glass = relay_time(now).saturating_since(header.capture_time);
            let audio_delay = playout.peer_stats(SPEAKER).and_then(|stats| stats.mouth_to_ear.last());
            lip_sync.handle_frame(origin + now, header.capture_time, Some(glass), audio_delay);
            next_video += 1;
        }
        playout.poll_mix(origin + now, Some(heard_at), &mut mix);
        played.extend_from_slice(&mix);
        if let Some(captured) = lip_sync.poll_frame(origin + now) {
            shown.push((now + SINK_LATENCY, Duration::from_micros(captured.as_micros() - 1_000_000)));
        }
        now += 10 * MS;
    }
    Call { sent, played, playout, shown }
}

/// The lag (in ms, from the start of the sent signal to the ear) at which `window`, taken
/// from the played signal at `start`, best matches the sent signal: searched coarsely on the
/// signals decimated by 8, then sample by sample around the best coarse lag.
fn lag_ms(sent: &[f32], played: &[f32], start: usize, window: usize) -> Option<f64> {
    const DECIMATE: usize = 8;
    let target = played.get(start..start + window)?;
    let energy: f32 = target.iter().map(|s| s * s).sum();
    if energy < 1.0 {
        return None; // concealment or silence
    }
    let score = |lag: usize, step: usize| -> f32 {
        let Some(origin) = start.checked_sub(lag) else { return f32::MIN };
        let Some(reference) = sent.get(origin..origin + window) else { return f32::MIN };
        reference.iter().step_by(step).zip(target.iter().step_by(step)).map(|(a, b)| a * b).sum()
    };
    // Lags from 0 to 600 ms.
    let coarse = (0..28_800 / DECIMATE)
        .map(|lag| lag * DECIMATE)
        .max_by(|a, b| score(*a, DECIMATE).total_cmp(&score(*b, DECIMATE)))?;
    let fine = (coarse.saturating_sub(2 * DECIMATE)..coarse + 2 * DECIMATE)
        .max_by(|a, b| score(*a, 1).total_cmp(&score(*b, 1)))?;
    // A good match holds most of the energy.
    (score(fine, 1) > 0.5 * energy).then_some(fine as f64 / 48.0)
}

/// Played samples are stamped by when they are heard: the mix of tick `k` (computed at
/// `3 ms + k * 10 ms`) is heard `SINK_LATENCY` later. Returns the measured mouth-to-ear of
/// windows across the steady part of the call.
fn measured_delays(call: &Call, from: Duration) -> Vec<f64> {
    let offset = ((3 * MS + SINK_LATENCY).as_secs_f64() * 48_000.0) as usize;
    // Put the played signal on the sender's timeline: index = time heard.
    let mut heard = vec![0.0f32; offset];
    heard.extend_from_slice(&call.played);
    let window = 2400;
    let first = (from.as_secs_f64() * 48_000.0) as usize;
    (first..call.sent.len().saturating_sub(window))
        .step_by(24_000)
        .filter_map(|start| lag_ms(&call.sent, &heard, start, window))
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[test]
fn on_a_clean_path_the_reported_mouth_to_ear_is_what_the_listener_hears() {
    let call = run(Network::default(), 6, 1);
    let mut measured = measured_delays(&call, Duration::from_secs(1));
    assert!(measured.len() >= 8, "the voice arrived: {measured:?}");
    let stats = call.playout.peer_stats(SPEAKER).unwrap();
    let reported = stats.mouth_to_ear.percentiles();
    let measured = median(&mut measured);
    eprintln!("clean: reported p50 {:.1} ms, measured {measured:.1} ms", reported.p50);
    assert!((reported.p50 - measured).abs() <= 3.0, "reported {reported:?}, measured {measured}");
    // 30 ms of network, 20 ms of speaker, the codec and at most a frame or two of buffer.
    assert!(reported.p95 <= 100.0, "{reported:?}");
    assert_eq!(stats.packets_lost, 0);
}

#[test]
fn through_jitter_and_stalls_the_report_still_agrees_with_the_recording() {
    let network = Network {
        jitter: 20 * MS,
        stalls: Some(Stalls { gap: (2000 * MS, 3000 * MS), length: (150 * MS, 300 * MS) }),
        ..Network::default()
    };
    for seed in [2, 3] {
        let call = run(network.clone(), 12, seed);
        let mut measured = measured_delays(&call, Duration::from_secs(1));
        let stats = call.playout.peer_stats(SPEAKER).unwrap();
        let reported = stats.mouth_to_ear.percentiles();
        assert!(measured.len() >= 15, "seed {seed}: the voice arrived: {measured:?}");
        let p50 = median(&mut measured);
        eprintln!(
            "stalls (seed {seed}): reported p50 {:.1} ms p95 {:.1} ms, measured p50 {p50:.1} ms",
            reported.p50, reported.p95
        );
        assert!((reported.p50 - p50).abs() <= 10.0, "seed {seed}: reported {reported:?}, measured {p50}");
    }
}

#[test]
fn video_is_shown_with_the_voice_captured_with_it() {
    let network = Network { jitter: 10 * MS, ..Network::default() };
    let call = run(network, 6, 4);
    let m2e = call.playout.peer_stats(SPEAKER).unwrap().mouth_to_ear.percentiles();
    // After the first second: what is on screen was captured about mouth-to-ear ago.
    let lags: Vec<f64> = call
        .shown
        .iter()
        .filter(|(at, _)| *at > Duration::from_secs(1))
        .map(|(at, captured)| (*at - *captured).as_secs_f64() * 1000.0)
        .collect();
    let mut sorted = lags.clone();
    let lag = median(&mut sorted);
    eprintln!("video shown {lag:.1} ms after capture; audio mouth-to-ear p50 {:.1} ms", m2e.p50);
    // A frame stays on screen for 67 ms (15 fps), so on average it is half that older.
    assert!((lag - m2e.p50 - 33.0).abs() <= 25.0, "video {lag} ms behind, audio {m2e:?}");
}
