//! Voice processing in a synthetic room: the echo of the far end is removed, the near-end talker
//! survives double talk, a change of echo delay is followed, and voice activity tells speech
//! from background noise.
//!
//! The echo tests run echo cancellation and noise suppression with gain control off. They
//! compare levels before and after, and the adaptive gain starts at +15 dB and adapts only
//! while someone speaks: until the near end first talks it lifts whatever is left of the echo,
//! and the comfort noise, by 15 dB, which would be counted against the canceller.
//!
//! Run with `--nocapture` to see the measured figures.

mod room;

use std::ops::Range;
use std::sync::OnceLock;
use std::time::Duration;

use chinwag_codec::{ProcessingConfig, VoiceProcessor};
use room::{
    DOUBLE_TALK, ECHO_DELAY, FAR_END_ONLY, FRAME, NEAR_END_ONLY, NOISE_ONLY, Processed, Room, Script, Talker,
    level_db, process, reduction_db, secs, span,
};

fn call_room() -> &'static Room {
    static ROOM: OnceLock<Room> = OnceLock::new();
    ROOM.get_or_init(|| Room::new(&Script::call(), &Talker::far_end(), &Talker::near_end()))
}

fn run(config: ProcessingConfig, room: &Room) -> Processed {
    let mut processor = VoiceProcessor::new(config);
    processor.set_stream_delay(ECHO_DELAY);
    process(&mut processor, room, |_, _| {})
}

const ECHO_AND_NOISE: ProcessingConfig =
    ProcessingConfig { echo_cancellation: true, noise_suppression: true, gain_control: false };

/// Output level against microphone level over `range`.
fn echo_reduction_db(room: &Room, processed: &Processed, range: &Range<Duration>) -> f64 {
    let span = span(range);
    reduction_db(&room.mic[span.clone()], &processed.out[span])
}

#[test]
fn echo_of_the_far_end_is_reduced_by_30_db() {
    let room = call_room();
    let processed = run(ECHO_AND_NOISE, room);
    let reduction = echo_reduction_db(room, &processed, &FAR_END_ONLY);
    let echo_above_noise = level_db(&room.echo[span(&FAR_END_ONLY)]) - level_db(&room.noise);
    eprintln!(
        "far end only: echo reduced by {reduction:.1} dB (echo {echo_above_noise:.1} dB above the noise)"
    );
    assert!(reduction >= 30.0, "echo reduced by only {reduction:.1} dB");
}

#[test]
fn near_end_speech_survives_double_talk() {
    let room = call_room();
    let processed = run(ECHO_AND_NOISE, room);
    let span = span(&DOUBLE_TALK);
    let change = level_db(&processed.out[span.clone()]) - level_db(&room.near_end[span]);
    eprintln!("double talk: near-end speech comes out {change:+.1} dB against its clean level");
    // A canceller that mutes or ducks the microphone while the far end talks takes 20 dB or
    // more off the near end; AEC3 takes a few.
    assert!(change > -6.0, "near-end speech attenuated by {:.1} dB in double talk", -change);
}

#[test]
fn a_jump_in_echo_delay_is_recovered_within_seconds() {
    // The far end talks throughout; 5 s in, the echo path delay jumps by 40 ms, as when an
    // output device's buffer grows. The devices keep reporting the old delay.
    const JUMP: f64 = 5.0;
    let script = Script {
        duration: secs(12.0),
        far_end_talks: vec![secs(0.0)..secs(12.0)],
        near_end_talks: vec![],
        echo_delays: vec![(Duration::ZERO, ECHO_DELAY), (secs(JUMP), ECHO_DELAY + Duration::from_millis(40))],
        ..Script::call()
    };
    let room = Room::new(&script, &Talker::far_end(), &Talker::near_end());
    let mut processor = VoiceProcessor::new(ECHO_AND_NOISE);
    processor.set_stream_delay(ECHO_DELAY);
    let mut realigned_at = None;
    let processed = process(&mut processor, &room, |processor, frame_idx| {
        let estimate = processor.stats().echo_delay.unwrap_or_default();
        if realigned_at.is_none() && estimate >= Duration::from_millis(90) {
            realigned_at = Some(frame_idx as f64 * 0.01);
        }
    });

    // Echo reduction in half-second windows, leaving out those where the far end pauses: with
    // the echo less than 10 dB above the background noise, the noise left after suppression
    // bounds what a window can show.
    const WINDOW: f64 = 0.5;
    let windows: Vec<(f64, f64)> = (0..(12.0 / WINDOW) as usize)
        .map(|i| (i as f64 * WINDOW, secs_range(i as f64 * WINDOW, (i + 1) as f64 * WINDOW)))
        .filter(|(_, window)| level_db(&room.echo[span(window)]) > -40.0)
        .map(|(start, window)| (start, echo_reduction_db(&room, &processed, &window)))
        .collect();
    let report: Vec<String> = windows.iter().map(|(start, db)| format!("{start:.1}s {db:.0}")).collect();
    eprintln!("echo reduction per window (dB): {}", report.join(", "));

    // Recovered once every later window keeps the echo 20 dB down.
    let recovered_at = windows
        .iter()
        .filter(|(start, db)| *start + WINDOW > JUMP && *db < 20.0)
        .map(|(start, _)| start + WINDOW)
        .fold(JUMP, f64::max);
    let settled = echo_reduction_db(&room, &processed, &secs_range(JUMP + 3.0, 12.0));
    eprintln!(
        "delay jump: echo back 20 dB down after {:.1} s, {settled:.1} dB down from 3 s after; \
         delay estimate realigned after {}",
        recovered_at - JUMP,
        realigned_at.map_or("never".to_string(), |at| format!("{:.1} s", at - JUMP)),
    );
    assert!(recovered_at - JUMP <= 3.0, "echo not back 20 dB down until {:.1} s after", recovered_at - JUMP);
    assert!(settled >= 30.0, "echo reduced by only {settled:.1} dB after the jump");
}

#[test]
fn without_echo_cancellation_the_echo_passes() {
    let room = call_room();
    let processed = run(ProcessingConfig { echo_cancellation: false, ..ECHO_AND_NOISE }, room);
    let reduction = echo_reduction_db(room, &processed, &FAR_END_ONLY);
    eprintln!("echo cancellation off: echo reduced by {reduction:.1} dB");
    assert!(reduction < 10.0, "echo reduced by {reduction:.1} dB with echo cancellation off");
}

#[test]
fn noise_suppression_lowers_stationary_noise() {
    let room = call_room();
    let span = span(&NOISE_ONLY);
    let noise_reduction = |noise_suppression| {
        let processed = run(ProcessingConfig { noise_suppression, ..ECHO_AND_NOISE }, room);
        reduction_db(&room.mic[span.clone()], &processed.out[span.clone()])
    };
    let (with, without) = (noise_reduction(true), noise_reduction(false));
    eprintln!("background noise reduced by {with:.1} dB with noise suppression, {without:.1} dB without");
    assert!(with >= 8.0 && with - without >= 6.0, "noise reduced by {with:.1} dB, {without:.1} dB without");
}

#[test]
fn voice_activity_follows_the_near_end_talker() {
    let room = call_room();
    let processed = run(ProcessingConfig::default(), room);
    // Frames where the near end is mid-syllable, going by its clean signal.
    let near_end_speaking = |frame_idx: usize| level_db(&room.near_end[frame_idx * FRAME..][..FRAME]) > -40.0;
    let voice_fraction = |range: &Range<Duration>, only_speech: bool| {
        let frames: Vec<usize> =
            frame_indices(range).filter(|&f| !only_speech || near_end_speaking(f)).collect();
        frames.iter().filter(|&&f| processed.analyses[f].voice).count() as f64 / frames.len() as f64
    };
    let speech = voice_fraction(&NEAR_END_ONLY, true);
    let double_talk = voice_fraction(&DOUBLE_TALK, true);
    let noise = voice_fraction(&NOISE_ONLY, false);
    let echo = voice_fraction(&FAR_END_ONLY, false);
    eprintln!(
        "voice detected in {:.0}% of near-end speech frames ({:.0}% in double talk), {:.0}% of noise \
         frames, {:.0}% of far-end-only (echo) frames",
        100.0 * speech,
        100.0 * double_talk,
        100.0 * noise,
        100.0 * echo
    );
    // The detector misses the first 20 to 40 ms of a syllable and most fricatives.
    assert!(speech >= 0.6, "voice in only {:.0}% of speech frames", 100.0 * speech);
    assert!(noise <= 0.1, "voice in {:.0}% of noise frames", 100.0 * noise);
    assert!(echo <= 0.1, "the far end's echo taken for voice in {:.0}% of frames", 100.0 * echo);
}

#[test]
fn gain_control_lifts_quiet_speech() {
    // The near end talks quietly (-40 dBFS) for 6 s, with no far end.
    let script = Script {
        duration: secs(6.0),
        far_end_talks: vec![],
        near_end_talks: vec![secs(0.0)..secs(6.0)],
        ..Script::call()
    };
    let room = Room::new(&script, &Talker::far_end(), &Talker { level_dbfs: -40.0, ..Talker::near_end() });
    let last_seconds = span(&secs_range(3.0, 6.0));
    let level = |gain_control| {
        let processed = run(ProcessingConfig { gain_control, ..ProcessingConfig::default() }, &room);
        level_db(&processed.out[last_seconds.clone()])
    };
    let (with, without) = (level(true), level(false));
    eprintln!("quiet speech comes out at {with:.1} dBFS with gain control, {without:.1} dBFS without");
    assert!(with - without >= 10.0, "gain control lifted quiet speech by only {:.1} dB", with - without);
}

#[test]
fn echo_cancellation_switched_on_mid_call_converges() {
    let room = call_room();
    let mut processor = VoiceProcessor::new(ProcessingConfig { echo_cancellation: false, ..ECHO_AND_NOISE });
    processor.set_stream_delay(ECHO_DELAY);
    let processed = process(&mut processor, room, |processor, frame_idx| {
        if frame_idx == 200 {
            processor.set_config(ECHO_AND_NOISE);
        }
    });
    let before = echo_reduction_db(room, &processed, &secs_range(0.0, 2.0));
    let after = echo_reduction_db(room, &processed, &secs_range(5.0, 7.0));
    eprintln!(
        "echo cancellation switched on at 2 s: echo reduced by {before:.1} dB before, {after:.1} dB 3 s after"
    );
    assert!(before < 10.0 && after >= 30.0, "{before:.1} dB before, {after:.1} dB after");
}

fn secs_range(start: f64, end: f64) -> Range<Duration> {
    secs(start)..secs(end)
}

fn frame_indices(range: &Range<Duration>) -> Range<usize> {
    let span = span(range);
    span.start.div_ceil(FRAME)..span.end / FRAME
}
