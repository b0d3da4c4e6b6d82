//! The controller on simulated links, in virtual time: a sender of voice and video behind a
//! bottleneck (a rate cap and a queue, as a home router has), pinging the far end four times
//! a second. Judged by what a caller would notice: voice stays on time, video settles at most
//! of the link and does not fill it again, a slower link is found within seconds and a faster
//! one within a minute.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chinwag_rate::{LinkEstimator, LinkSignals, RateConfig, RateController};
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

const MS: Duration = Duration::from_millis(1);
const TICK: Duration = Duration::from_millis(5);
/// Voice: 20 ms frames of 100 bytes plus headers (40 kb/s).
const AUDIO_BYTES: u64 = 130;
const VIDEO_FPS: u64 = 30;

/// A link: one-way delay, a cap that follows a schedule, and a queue given in time at the cap.
struct Link {
    /// (from, bits per second).
    schedule: Vec<(Duration, f64)>,
    queue_time: Duration,
    delay: Duration,
}

impl Link {
    fn cap(&self, at: Duration) -> f64 {
        self.schedule.iter().rev().find(|(from, _)| *from <= at).map_or(f64::INFINITY, |(_, bps)| *bps)
    }
}

/// What the run saw, per 100 ms.
#[derive(Debug, Default)]
struct Run {
    /// (when, how long voice frames queued at the sender and in the bottleneck).
    audio_delay: Vec<(Duration, Duration)>,
    /// (when, the controller's rate).
    target: Vec<(Duration, f64)>,
    /// (second, video bits that left the bottleneck in it).
    video_bps: Vec<(u64, f64)>,
    overuses: u64,
}

impl Run {
    fn audio_p95(&self, from: Duration, to: Duration) -> Duration {
        let mut delays: Vec<Duration> =
            self.audio_delay.iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, d)| *d).collect();
        delays.sort();
        delays.get(delays.len() * 95 / 100).copied().unwrap_or_default()
    }

    /// Mean video rate over whole seconds `from..to`.
    fn video_rate(&self, from: u64, to: u64) -> f64 {
        let rates: Vec<f64> =
            self.video_bps.iter().filter(|(s, _)| (from..to).contains(s)).map(|(_, r)| *r).collect();
        rates.iter().sum::<f64>() / rates.len().max(1) as f64
    }
}

/// Runs `seconds` of a call through `link`: the sender offers voice and video at the
/// controller's rate; its socket takes bytes only while the bottleneck's queue has room.
fn run(link: &Link, seconds: u64, seed: u64) -> Run {
    let origin = Instant::now();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut estimator = LinkEstimator::default();
    let mut controller = RateController::new(RateConfig::default());
    // The sender's own queue: voice frames (sent at), and the newest video frame's bytes.
    let mut audio_waiting: VecDeque<Duration> = VecDeque::new();
    let mut video_waiting: Option<u64> = None;
    let mut video_left_in_frame = 0u64;
    // The bottleneck: (bytes, is voice sent at, is video) in order.
    let mut queue: VecDeque<(u64, Option<Duration>, bool)> = VecDeque::new();
    let mut queued_bytes = 0u64;
    let mut credit = 0.0f64;
    let mut accepted = 0u64;
    // Bytes out of the bottleneck, for the far end's counts: (when, total).
    let mut delivered_total = 0u64;
    let mut delivered: VecDeque<(Duration, u64)> = VecDeque::new();
    let mut replaced = false;
    let mut result = Run::default();
    let mut video_this_second = 0.0;
    let mut now = Duration::ZERO;
    let end = Duration::from_secs(seconds);
    while now < end {
        let cap = link.cap(now);
        // The sender's clocks: voice every 20 ms, video every frame.
        if now.as_millis().is_multiple_of(20) {
            audio_waiting.push_back(now);
        }
        if (now.as_micros() as u64) % (1_000_000 / VIDEO_FPS) < TICK.as_micros() as u64 {
            let video_bps = (controller.target_bps() - 48_000.0).max(0.0);
            let frame = (video_bps / 8.0 / VIDEO_FPS as f64) as u64;
            if video_waiting.replace(frame).is_some() {
                replaced = true;
            }
        }
        // The socket takes what the bottleneck has room for: voice first, then video.
        let room = |queued: u64| {
            let limit =
                if cap.is_finite() { (cap / 8.0 * link.queue_time.as_secs_f64()) as u64 } else { u64::MAX };
            limit.saturating_sub(queued)
        };
        while let Some(&sent_at) = audio_waiting.front() {
            if room(queued_bytes) < AUDIO_BYTES {
                break;
            }
            audio_waiting.pop_front();
            queue.push_back((AUDIO_BYTES, Some(sent_at), false));
            queued_bytes += AUDIO_BYTES;
            accepted += AUDIO_BYTES;
        }
        if video_left_in_frame == 0 {
            video_left_in_frame = video_waiting.take().unwrap_or(0);
        }
        // A video frame goes in pieces, as a socket takes a large write.
        while video_left_in_frame > 0 && room(queued_bytes) > 0 && audio_waiting.is_empty() {
            let piece = video_left_in_frame.min(room(queued_bytes)).min(1500);
            video_left_in_frame -= piece;
            queue.push_back((piece, None, true));
            queued_bytes += piece;
            accepted += piece;
        }
        // The bottleneck drains at the cap.
        credit += if cap.is_finite() { cap / 8.0 * TICK.as_secs_f64() } else { f64::INFINITY };
        while let Some(&(bytes, voice, video)) = queue.front() {
            if (bytes as f64) > credit {
                break;
            }
            credit -= bytes as f64;
            queue.pop_front();
            queued_bytes -= bytes;
            delivered_total += bytes;
            if let Some(sent_at) = voice {
                result.audio_delay.push((now, now - sent_at));
            }
            if video {
                video_this_second += bytes as f64 * 8.0;
            }
        }
        if queue.is_empty() {
            credit = credit.min(1500.0);
        }
        delivered.push_back((now, delivered_total));
        while delivered.len() > 1000 {
            delivered.pop_front();
        }
        if now.as_millis().is_multiple_of(1000) && now > Duration::ZERO {
            result.video_bps.push((now.as_secs() - 1, video_this_second));
            video_this_second = 0.0;
        }
        let at = origin + now;
        estimator.handle_sent_total(at, accepted);
        // A ping every 250 ms waits behind what is in the bottleneck; the far end stamps it.
        if now.as_millis().is_multiple_of(250) {
            let queue_wait = if cap.is_finite() { queued_bytes as f64 * 8.0 / cap } else { 0.0 };
            let jitter = Duration::from_micros(rng.random_range(0..2000));
            let one_way = link.delay + Duration::from_secs_f64(queue_wait) + jitter;
            estimator.handle_one_way(at, one_way.as_micros() as i64 + 7_000_000);
            estimator.handle_rtt(at, one_way + link.delay);
            // The far end counts what it received; its answer says how much by the time the
            // ping arrived there (on a clock 7 s ahead of ours).
            let arrives = now + one_way - link.delay;
            let received = delivered
                .iter()
                .rev()
                .find(|(at, _)| *at <= arrives)
                .map_or(delivered_total, |(_, total)| *total);
            estimator.handle_far_end((arrives + Duration::from_secs(7)).as_micros() as u64, received);
        }
        // The sender looks at its link every 50 ms.
        if now.as_millis().is_multiple_of(50) {
            let signals = LinkSignals {
                queue_delay: estimator.queue_delay(),
                delivered_bps: estimator.delivered_rate().map(|bytes| bytes * 8.0),
                backlog: std::mem::take(&mut replaced),
            };
            let target = controller.handle_signals(at, signals);
            if now.as_millis().is_multiple_of(100) {
                result.target.push((now, target));
            }
        }
        now += TICK;
    }
    result.overuses = controller.overuses();
    result
}

fn capped(bps: f64, queue_ms: u64) -> Link {
    Link {
        schedule: vec![(Duration::ZERO, bps)],
        queue_time: Duration::from_millis(queue_ms),
        delay: 20 * MS,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn video_settles_at_most_of_a_capped_link_and_voice_stays_on_time() {
    for (bps, queue_ms) in [(4e6, 200), (2e6, 200), (1e6, 200), (5e5, 200), (1e6, 2000), (5e5, 2000)] {
        let run = run(&capped(bps, queue_ms), 40, 1);
        let settled = run.video_rate(8, 40);
        let share = settled / bps;
        let voice = run.audio_p95(secs(8), secs(40));
        eprintln!(
            "{:.1} Mb/s, {queue_ms} ms queue: video {:.0} kb/s ({:.0} % of the link) from 8 s, voice p95 {voice:?}, {} overuses",
            bps / 1e6,
            settled / 1000.0,
            share * 100.0,
            run.overuses
        );
        assert!((0.5..=0.9).contains(&share), "{bps}: video at {:.0} % of the link", share * 100.0);
        assert!(voice <= 80 * MS, "{bps}, {queue_ms} ms: voice waited {voice:?} (p95) after settling");
        // It does not fill the link again every few seconds.
        assert!(run.overuses <= 8, "{bps}: {} overuses in 40 s", run.overuses);
    }
}

#[test]
fn a_link_that_slows_down_is_found_in_seconds_and_one_that_speeds_up_within_a_minute() {
    let link = Link {
        schedule: vec![(Duration::ZERO, 4e6), (secs(20), 5e5), (secs(40), 4e6)],
        queue_time: 200 * MS,
        delay: 20 * MS,
    };
    let run = run(&link, 100, 2);
    let before = run.video_rate(10, 20);
    // Settled within 8 s of the drop.
    let slow = run.video_rate(28, 40);
    let after = run.video_rate(90, 100);
    let voice_during = run.audio_p95(secs(23), secs(40));
    eprintln!(
        "4 -> 0.5 -> 4 Mb/s: video {:.0} / {:.0} / {:.0} kb/s; voice p95 from 3 s after the drop {voice_during:?}",
        before / 1000.0,
        slow / 1000.0,
        after / 1000.0
    );
    assert!(before > 2e6, "{before}");
    assert!((2.5e5..=4.5e5).contains(&slow), "{slow}");
    assert!(voice_during <= 80 * MS, "{voice_during:?}");
    assert!(after > 2e6, "back up within a minute: {after}");
}

#[test]
fn an_open_link_climbs_to_the_maximum() {
    let link = Link { schedule: vec![], queue_time: 200 * MS, delay: 20 * MS };
    let run = run(&link, 15, 3);
    let last = run.target.last().map(|(_, bps)| *bps).unwrap();
    assert_eq!(last, RateConfig::default().max_bps);
    assert_eq!(run.overuses, 0);
}
