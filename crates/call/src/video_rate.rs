//! Video rate control: the bitrate the link can carry, turned into frame rate, size and JPEG
//! quality.
//!
//! [`RateController`] (from `chinwag-rate`) finds the rate from the link's signals; this core
//! spends it. It keeps, for each picture size, what a frame has really cost (bytes per pixel,
//! brought to one reference quality), so that a textured camera picture, which costs three to
//! four times what a flat one does, is judged by its own bytes; and it picks the best rung of
//! a ladder that fits both the rate and a cap on one frame's size (a frame is sent whole, and
//! voice queued behind it on a slow link waits for all of it). Frame rate and quality drop
//! first, to no less than 15 fps at full size, then size. A rung's cost includes the lower
//! layers ([`LOWER_LAYERS`]) sent beside frames larger than they are.

use std::time::{Duration, Instant};

use chinwag_proto::VideoLayer;
use chinwag_rate::{LinkSignals, RateConfig, RateController};

/// What a frame is sent at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoLevel {
    /// Frames per second sent, at most the source's.
    pub fps: f64,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
    /// Width and height are divided by this.
    pub size_divisor: u32,
}

/// A lower video layer: the same picture, smaller, sent beside frames larger than it for
/// receivers whose downlink cannot carry those (the relay forwards one layer to each).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowerLayer {
    pub layer: VideoLayer,
    /// What its frames are sent at: at most `fps` a second (and no more than the source
    /// gives), the source's width and height divided by `size_divisor`.
    pub level: VideoLevel,
}

/// The lower layers, largest first. From a camera-like 640×480 picture: the middle one is
/// 320×240 at about 6.7 kB a frame (1.6 Mb/s at 30 fps, for downlinks of about 2 to 4 Mb/s),
/// the small one 160×120 at about 1.8 kB (0.2 Mb/s at 15 fps). Together they cost about a
/// quarter of what the full frames do: simulcast's usual price. Within the default 10 Mb/s
/// the full frames of a clean link are then 640×480 at quality 60 rather than 75: a sender
/// using 11 Mb/s filled a 40 ms WAN path's TCP and put its voice 20-40 ms later.
pub const LOWER_LAYERS: [LowerLayer; 2] = [
    LowerLayer { layer: VideoLayer::Middle, level: VideoLevel { fps: 30.0, quality: 60, size_divisor: 2 } },
    LowerLayer { layer: VideoLayer::Small, level: VideoLevel { fps: 15.0, quality: 50, size_divisor: 4 } },
];

impl LowerLayer {
    /// Whether this layer goes beside full frames sent at `level`: while those are larger.
    pub fn goes_beside(&self, level: VideoLevel) -> bool {
        level.size_divisor < self.level.size_divisor
    }
}

/// The rungs, best first: (size divisor, frames per second, quality below the best). Full size
/// down to 15 fps; then half size, whose frames are small enough for a slow link, at the full
/// rate first; then quarter size. The comments give what a camera-like 640×480 picture costs.
const LADDER: [(u32, f64, u8); 18] = [
    (1, 30.0, 0),  // 37.6 kB a frame, 9 Mb/s
    (1, 30.0, 15), // 6.4 Mb/s
    (1, 20.0, 15), // 4.3 Mb/s
    (1, 15.0, 15), // 3.2 Mb/s
    (1, 15.0, 30), // 21 kB, 2.5 Mb/s
    (2, 30.0, 5),  // 8.6 kB, 2.1 Mb/s
    (2, 30.0, 20), // 6.2 kB, 1.5 Mb/s
    (2, 30.0, 35), // 4.8 kB, 1.15 Mb/s
    (2, 20.0, 35), // 0.77 Mb/s
    (2, 20.0, 45), // 3.9 kB, 0.62 Mb/s
    (2, 15.0, 35), // 0.58 Mb/s
    (2, 15.0, 45), // 0.47 Mb/s
    (4, 30.0, 35), // 2.2 kB, 0.5 Mb/s
    (4, 25.0, 35), // 0.43 Mb/s
    (4, 20.0, 35), // 0.35 Mb/s
    (4, 15.0, 35), // 0.26 Mb/s
    (4, 10.0, 35), // 0.18 Mb/s
    (4, 5.0, 35),  // 0.09 Mb/s
];

/// What a camera-like frame costs at the reference quality before any has been measured.
const FIRST_GUESS_BYTES_PER_PIXEL: f64 = 0.12;
/// How quickly the cost follows new frames.
const COST_WEIGHT: f64 = 0.2;
/// The most one frame may take of the link, in time at the controller's rate (a little under
/// the link's): voice that queues behind a frame waits for all of it, so this is what video
/// may add to voice's delay on a slow link.
const FRAME_TIME: Duration = Duration::from_millis(40);
/// Kept for voice (40 kb/s of Opus and its headers) out of the controller's rate.
const VOICE_BPS: f64 = 50_000.0;

/// A frame's size in bytes at `quality`, relative to quality 75: measured on a
/// camera-like 640×480 picture with the project's encoder (libjpeg-turbo, 4:2:0); smaller
/// pictures vary less with quality, which the cost measured at each size makes up for.
fn quality_factor(quality: u8) -> f64 {
    const TABLE: [(u8, f64); 8] =
        [(20, 0.31), (30, 0.41), (40, 0.51), (50, 0.61), (60, 0.71), (75, 1.0), (85, 1.41), (95, 3.16)];
    let q = quality.clamp(TABLE[0].0, TABLE[TABLE.len() - 1].0);
    let upper = TABLE.iter().position(|(at, _)| *at >= q).unwrap_or(TABLE.len() - 1).max(1);
    let ((q0, f0), (q1, f1)) = (TABLE[upper - 1], TABLE[upper]);
    let t = f64::from(q - q0) / f64::from(q1 - q0);
    f0 + (f1 - f0) * t.clamp(0.0, 1.0)
}

/// The video sender's rate control: link signals and sent frames in, the level of the next
/// frame out.
#[derive(Debug, Clone)]
pub struct VideoRate {
    controller: RateController,
    source_fps: f64,
    best_quality: u8,
    /// Bytes per pixel at quality 75 (the reference every cost is brought to), per size
    /// divisor 1, 2 and 4.
    cost: [Option<f64>; 3],
    level: VideoLevel,
    /// When the next frame may go, at the level's frame rate.
    next_frame_at: Option<Instant>,
}

fn size_class(divisor: u32) -> usize {
    match divisor {
        0 | 1 => 0,
        2 | 3 => 1,
        _ => 2,
    }
}

impl VideoRate {
    /// A sender whose source gives `source_fps` frames a second, encoding at up to
    /// `best_quality`.
    pub fn new(config: RateConfig, source_fps: u32, best_quality: u8) -> Self {
        let source_fps = f64::from(source_fps.max(1));
        let mut rate = Self {
            controller: RateController::new(config),
            source_fps,
            best_quality,
            cost: [None; 3],
            level: VideoLevel { fps: source_fps, quality: best_quality, size_divisor: 1 },
            next_frame_at: None,
        };
        rate.level = rate.choose(0);
        rate
    }

    /// Takes the link's signals at `now`; returns the rate for video, in bits per second.
    pub fn handle_link(&mut self, now: Instant, signals: LinkSignals) -> f64 {
        self.controller.handle_signals(now, signals);
        self.video_bps()
    }

    /// Whether the frame the source gave at `now` goes out, and at what level, given the
    /// pixels of the source's frame.
    pub fn poll_frame(&mut self, now: Instant, pixels: u64) -> Option<VideoLevel> {
        let interval = Duration::from_secs_f64(1.0 / self.level.fps);
        // A little early is on time: the source's frames do not arrive exactly on the tick.
        if self.next_frame_at.is_some_and(|at| now + interval / 4 < at) {
            return None;
        }
        self.level = self.choose(pixels);
        let interval = Duration::from_secs_f64(1.0 / self.level.fps);
        // The schedule follows the frames sent, and is never more than a frame behind now,
        // so that a pause is not followed by a burst.
        let base = match self.next_frame_at {
            Some(at) if at + interval >= now => at,
            _ => now,
        };
        self.next_frame_at = Some(base + interval);
        Some(self.level)
    }

    /// Takes the bytes a frame of `pixels` really took at `level` (of the full layer or, with
    /// the layer's size and quality, of a lower one: a picture's cost is the same whichever).
    pub fn handle_frame_sent(&mut self, level: VideoLevel, pixels: u64, bytes: usize) {
        if pixels == 0 {
            return;
        }
        let per_pixel = bytes as f64 / pixels as f64 / quality_factor(level.quality);
        let cost = &mut self.cost[size_class(level.size_divisor)];
        *cost = Some(cost.map_or(per_pixel, |old| old + COST_WEIGHT * (per_pixel - old)));
    }

    /// The rate the controller allows video now, in bits per second: what it finds, less
    /// voice.
    pub fn video_bps(&self) -> f64 {
        let target = self.controller.target_bps();
        (target - VOICE_BPS).max(target / 4.0)
    }

    pub fn level(&self) -> VideoLevel {
        self.level
    }

    /// How many times the link was found overused.
    pub fn overuses(&self) -> u64 {
        self.controller.overuses()
    }

    /// Bytes per pixel at quality 75 at `divisor`: measured there, or from a
    /// measured size (a smaller picture costs more per pixel), or the first guess.
    fn cost_per_pixel(&self, divisor: u32) -> f64 {
        // Per pixel, a half-size camera picture costs about what a full one does, a quarter
        // a quarter more (measured as the quality table was).
        const RELATIVE: [f64; 3] = [1.0, 1.0, 1.25];
        let class = size_class(divisor);
        if let Some(cost) = self.cost[class] {
            return cost;
        }
        let measured = (0..3).find_map(|other| self.cost[other].map(|cost| cost / RELATIVE[other]));
        measured.unwrap_or(FIRST_GUESS_BYTES_PER_PIXEL) * RELATIVE[class]
    }

    /// The best rung whose bytes fit the rate and whose frames fit the cap; the last rung
    /// when none does.
    fn choose(&self, pixels: u64) -> VideoLevel {
        let budget = self.video_bps() / 8.0;
        // Until the link has shown a limit its rate is a guess, and a cap from a guess would
        // only shrink the picture.
        let frame_cap = if self.controller.overuses() > 0 {
            self.controller.target_bps() / 8.0 * FRAME_TIME.as_secs_f64()
        } else {
            f64::INFINITY
        };
        let pixels = if pixels == 0 { 640 * 480 } else { pixels };
        let level = |(divisor, fps, below): (u32, f64, u8)| VideoLevel {
            fps: fps.min(self.source_fps),
            quality: self.best_quality.saturating_sub(below).max(20),
            size_divisor: divisor,
        };
        let frame_bytes = |level: &VideoLevel| {
            let scaled = pixels as f64 / f64::from(level.size_divisor * level.size_divisor);
            scaled * self.cost_per_pixel(level.size_divisor) * quality_factor(level.quality)
        };
        let lower_bytes_per_second = |beside: VideoLevel| -> f64 {
            LOWER_LAYERS
                .iter()
                .filter(|lower| lower.goes_beside(beside))
                .map(|lower| {
                    let level = VideoLevel { fps: lower.level.fps.min(self.source_fps), ..lower.level };
                    frame_bytes(&level) * level.fps
                })
                .sum()
        };
        LADDER
            .into_iter()
            .map(level)
            .find(|level| {
                let bytes = frame_bytes(level);
                // The quarter-size pictures are the smallest made: capping them would only cost
                // frame rate.
                let capped = level.size_divisor < 4 && bytes > frame_cap;
                bytes * level.fps + lower_bytes_per_second(*level) <= budget && !capped
            })
            .unwrap_or_else(|| level(LADDER[LADDER.len() - 1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const VGA: u64 = 640 * 480;

    /// A camera-like 640×480 picture: 37.5 kB a frame at quality 75.
    fn camera_bytes(level: VideoLevel) -> usize {
        let pixels = VGA as f64 / f64::from(level.size_divisor * level.size_divisor);
        let relative = [1.0, 1.0, 1.25][size_class(level.size_divisor)];
        (pixels * 0.122 * relative * quality_factor(level.quality)) as usize
    }

    /// A controller at `bps` on a link that has shown its limit.
    fn limited(now: Instant, bps: f64) -> RateController {
        let config = RateConfig {
            start_bps: bps,
            max_bps: bps.max(RateConfig::default().max_bps),
            ..RateConfig::default()
        };
        let mut controller = RateController::new(config);
        let queue =
            LinkSignals { queue_delay: Some(100 * MS), delivered_bps: Some(bps / 0.85), backlog: false };
        controller.handle_signals(now, queue);
        assert!((controller.target_bps() - bps).abs() < 1.0 && controller.overuses() == 1);
        controller
    }

    /// Runs a source at 30 fps for `seconds` with the controller held at `bps`, sending the
    /// lower layers as the engine does; returns the full layer's levels sent and the bits per
    /// second all layers took.
    fn run(rate: &mut VideoRate, start: Instant, seconds: u64, bps: f64) -> (Vec<VideoLevel>, f64) {
        let mut sent = Vec::new();
        let mut bytes = 0;
        let mut lower_due = [start; LOWER_LAYERS.len()];
        for frame_idx in 0..seconds * 30 {
            let now = start + frame_idx as u32 * 33 * MS;
            rate.controller = limited(now, bps);
            let Some(level) = rate.poll_frame(now, VGA) else { continue };
            let mut send = |level: VideoLevel| {
                let size = camera_bytes(level);
                rate.handle_frame_sent(level, VGA / u64::from(level.size_divisor.pow(2)), size);
                bytes += size;
            };
            send(level);
            sent.push(level);
            for (lower, due) in LOWER_LAYERS.iter().zip(&mut lower_due) {
                if lower.goes_beside(level) && now + 5 * MS >= *due {
                    *due = now + Duration::from_secs_f64(1.0 / lower.level.fps);
                    send(lower.level);
                }
            }
        }
        (sent, bytes as f64 * 8.0 / seconds as f64)
    }

    #[test]
    fn each_rung_costs_at_most_twice_the_one_below_lower_layers_included() {
        // The controller climbs to at most twice what the link is seen to deliver: a rung
        // that costs more than that over the one below could never be reached.
        let cost = |(divisor, fps, below): (u32, f64, u8)| {
            let level = VideoLevel { fps, quality: 75 - below, size_divisor: divisor };
            let lower: f64 = LOWER_LAYERS
                .iter()
                .filter(|lower| lower.goes_beside(level))
                .map(|lower| camera_bytes(lower.level) as f64 * lower.level.fps)
                .sum();
            camera_bytes(level) as f64 * fps + lower
        };
        for pair in LADDER.windows(2) {
            let (upper, lower) = (cost(pair[0]), cost(pair[1]));
            assert!(upper >= lower, "{:?} costs less than {:?}", pair[0], pair[1]);
            assert!(
                upper <= 2.0 * lower,
                "{:?} costs {upper:.0} B/s, over twice {:?}'s {lower:.0}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn the_quality_table_rises_with_quality() {
        assert!((quality_factor(75) - 1.0).abs() < 1e-9);
        let factors: Vec<f64> = (1..=100).map(quality_factor).collect();
        assert!(factors.windows(2).all(|pair| pair[0] <= pair[1]));
    }

    #[test]
    fn a_fast_link_sends_everything_at_full_quality() {
        let mut rate = VideoRate::new(RateConfig::default(), 30, 75);
        let (sent, _) = run(&mut rate, Instant::now(), 4, 12_000_000.0);
        let steady = &sent[30..];
        assert!(steady.iter().all(|level| *level == VideoLevel { fps: 30.0, quality: 75, size_divisor: 1 }));
        assert!((110..=121).contains(&sent.len()), "{} frames in 4 s at 30 fps", sent.len());
    }

    #[test]
    fn each_budget_is_spent_within_it_and_slower_links_get_lower_levels() {
        let mut previous: Option<VideoLevel> = None;
        for bps in [6_000_000.0, 3_000_000.0, 1_500_000.0, 700_000.0, 350_000.0] {
            let mut rate = VideoRate::new(RateConfig::default(), 30, 75);
            let start = Instant::now();
            run(&mut rate, start, 2, bps);
            let (sent, used) = run(&mut rate, start + Duration::from_secs(2), 4, bps);
            let video = rate.video_bps();
            let level = *sent.last().unwrap();
            assert!(used <= video * 1.05, "at {bps}: {used:.0} b/s used of {video:.0}");
            assert!(used >= video * 0.4, "at {bps}: only {used:.0} b/s used of {video:.0}");
            // One frame never takes more than the cap of the link's time.
            let frame = camera_bytes(level) as f64 * 8.0;
            let cap = rate.controller.target_bps() * FRAME_TIME.as_secs_f64();
            assert!(frame <= cap * 1.05, "at {bps}: {level:?} is {frame} bits");
            if let Some(previous) = previous {
                let cost = |level: VideoLevel| camera_bytes(level) as f64 * level.fps;
                assert!(cost(level) < cost(previous), "{level:?} after {previous:?}");
            }
            previous = Some(level);
        }
    }

    #[test]
    fn frame_rate_goes_first_and_full_size_keeps_at_least_15_fps() {
        let mut rate = VideoRate::new(RateConfig::default(), 30, 75);
        let start = Instant::now();
        run(&mut rate, start, 2, 5_000_000.0);
        let level = rate.level();
        assert_eq!(level.size_divisor, 1, "{level:?}");
        assert!(level.fps < 30.0 || level.quality < 75, "{level:?}");
        for bps in [4_000_000.0, 2_000_000.0, 1_000_000.0, 500_000.0] {
            run(&mut rate, start, 2, bps);
            let level = rate.level();
            assert!(level.size_divisor > 1 || level.fps >= 10.0, "at {bps}: {level:?}");
        }
    }

    #[test]
    fn the_cost_follows_the_pictures_really_sent() {
        // A flat picture costs a quarter of a camera's: the same budget buys more of it.
        let mut flat = VideoRate::new(RateConfig { start_bps: 3_000_000.0, ..RateConfig::default() }, 30, 75);
        let start = Instant::now();
        for frame_idx in 0..90u32 {
            if let Some(level) = flat.poll_frame(start + frame_idx * 33 * MS, VGA) {
                let bytes = camera_bytes(level) / 4;
                flat.handle_frame_sent(level, VGA / u64::from(level.size_divisor.pow(2)), bytes);
            }
        }
        assert_eq!(flat.level(), VideoLevel { fps: 30.0, quality: 75, size_divisor: 1 });
        let mut camera =
            VideoRate::new(RateConfig { start_bps: 3_000_000.0, ..RateConfig::default() }, 30, 75);
        run(&mut camera, start, 3, 3_000_000.0);
        assert_ne!(camera.level(), flat.level());
    }

    #[test]
    fn frames_are_capped_only_once_the_link_has_shown_a_limit() {
        let mut rate = VideoRate::new(RateConfig { start_bps: 1_000_000.0, ..RateConfig::default() }, 10, 75);
        // 320x240 at 10 fps: 9.4 kB frames fit 1 Mb/s, but are over 40 ms of it.
        let qvga = 320 * 240;
        let start = Instant::now();
        assert_eq!(rate.poll_frame(start, qvga).unwrap().size_divisor, 1);
        rate.controller = limited(start, 1_000_000.0);
        assert_eq!(rate.poll_frame(start + 200 * MS, qvga).unwrap().size_divisor, 2);
    }

    #[test]
    fn a_slower_source_is_never_asked_for_more_frames_than_it_gives() {
        let rate = VideoRate::new(RateConfig { start_bps: 10_000_000.0, ..RateConfig::default() }, 15, 75);
        assert_eq!(rate.level().fps, 15.0);
    }
}
