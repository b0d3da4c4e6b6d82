//! The jitter buffer itself: packets in through [`JitterBuffer::handle_packet`], one decision
//! per frame period out of [`JitterBuffer::poll_playout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chinwag_proto::{MediaTimestamp, SeqNo};

use crate::config::{
    JitterConfig, JitterError, OPUS_FRAME_TICKS, duration_to_nanos, frame_ticks, nanos_to_duration,
    ticks_to_duration, ticks_to_nanos,
};
use crate::estimator::DelayEstimator;

/// What the playout side should do for the next frame period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode `payload` as usual. With `accelerate`, the buffer holds more audio than its
    /// target: play this frame time-compressed if that can be done inaudibly (a pitch period
    /// of voiced speech, or a quiet few milliseconds, taken out), and poll again that much
    /// sooner. Asked only when [`JitterConfig::time_stretch`] is on; ignoring it only slows
    /// the return to target.
    Frame { seq: SeqNo, timestamp: MediaTimestamp, payload: Vec<u8>, accelerate: bool },
    /// Frame `seq` did not arrive in time but the one after it did: decode the in-band FEC
    /// carried in `next_payload` (Opus `decode_fec`) to stand in for `seq`. The next poll plays
    /// the next frame itself.
    RecoverWithFec { seq: SeqNo, timestamp: MediaTimestamp, next_payload: Vec<u8> },
    /// There is no frame to decode: run the decoder's loss concealment for one frame in place
    /// of `seq`, the frame due now. Either `seq` is missing while later frames are here (it is
    /// given up and counted lost unless it turns up later), or nothing is here yet (an
    /// underrun: the buffer keeps waiting for `seq`, and playing it later adds one frame of
    /// delay), or the sender left a gap in media time and `seq` is not due yet.
    Conceal { seq: SeqNo, timestamp: MediaTimestamp },
    /// Nothing to play: output one frame of silence. Returned before the first packet, while
    /// (re)buffering, and once an underrun has lasted longer than the maximum delay (the
    /// sender stopped or the connection stalled for good).
    Silence,
}

/// What the caller knows about a packet besides its place in the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketFlags {
    /// The sender's `MediaFlags::RESTART` bit: the stream starts afresh at this packet.
    pub restart: bool,
    /// The packet holds silence or background noise (the Opus encoder's voice activity flag
    /// is off, say). When it has more audio than it needs, the buffer drops such frames
    /// whole, before it asks for speech to be compressed.
    pub silent: bool,
}

impl PacketFlags {
    /// A packet of speech that continues its stream.
    pub const SPEECH: Self = Self { restart: false, silent: false };
    /// A packet of silence or background noise.
    pub const SILENT: Self = Self { restart: false, silent: true };
    /// The first packet of a restarted stream.
    pub const RESTART: Self = Self { restart: true, silent: false };
}

/// Counters since the buffer was created, and gauges as of the last call.
///
/// Every packet handed in ends up counted exactly once: as a duplicate, late, flushed,
/// dropped, played, or still buffered. That is,
/// `packets_received == duplicates + packets_late + packets_flushed + frames_dropped +
/// frames_played + packets_buffered`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JitterStats {
    /// Packets handed to [`JitterBuffer::handle_packet`], duplicates and late ones included.
    pub packets_received: u64,
    /// Second and later copies of a packet, discarded.
    pub duplicates: u64,
    /// Packets that arrived after their turn had passed (the frame was concealed, recovered
    /// with FEC or skipped), discarded.
    pub packets_late: u64,
    /// Frames whose turn passed without them and that have not arrived since.
    pub packets_lost: u64,
    /// Packets discarded unplayed when a sender restart reset the buffer, or pushed out
    /// because the buffer was full.
    pub packets_flushed: u64,
    /// Frames dropped unplayed to bring the delay down to target.
    pub frames_dropped: u64,
    /// Of `frames_dropped`, those marked silent.
    pub silent_frames_dropped: u64,
    /// [`Playout::Frame`] results.
    pub frames_played: u64,
    /// Of `frames_played`, those with `accelerate`: asked to be played time-compressed.
    pub frames_accelerated: u64,
    /// [`Playout::RecoverWithFec`] results.
    pub fec_recovered: u64,
    /// [`Playout::Conceal`] results.
    pub frames_concealed: u64,
    /// Times the buffer started over because the sender restarted its stream.
    pub resets: u64,
    /// Packets held now.
    pub packets_buffered: u64,
    /// The frame duration in use (configured, or learned from the timestamps).
    pub frame_duration: Duration,
    /// The delay the buffer aims for: the chosen quantile of recent relative delays, or the
    /// height of periodic delay peaks if higher, plus the margin, within the configured bounds.
    pub target_delay: Duration,
    /// The height of the periodic delay peaks the target covers; zero when there are none.
    pub peak_delay: Duration,
    /// How long after its earliest possible arrival (by the fastest recent path) the last
    /// frame was played: what this buffer adds to the mouth-to-ear delay.
    pub playout_delay: Duration,
    /// Media time held, from the next frame to play to the end of the newest frame here.
    pub buffered: Duration,
}

/// Outcomes remembered for the frames just behind the playout cursor, to tell a late packet
/// from a duplicate.
const HISTORY: usize = 256;

/// A packet whose timestamp is further than this from where its sequence number puts it
/// belongs to another stream: the sender restarted without saying so.
const TIMESTAMP_JUMP_TICKS: i64 = 48_000;

/// For this many frames after a stream starts, a packet flagged `RESTART` that fits the stream
/// is a repeat of the flag (or a reordered first packet) rather than another restart.
const RESTART_REPEAT_WINDOW: i32 = 50;

/// How far beyond the old stream's newest packet a straggler of that stream may be.
const STRAGGLER_AHEAD: i32 = 64;

/// Consecutive packets showing another frame duration before it is adopted.
const FRAME_LEARN_COUNT: u8 = 3;

/// The adaptive jitter buffer for one remote participant's audio.
///
/// Feed it every audio packet from that participant with [`handle_packet`](Self::handle_packet)
/// as it arrives, and ask it what to play with [`poll_playout`](Self::poll_playout) each time
/// the playout side needs the next frame (once per frame period). Both take the current time;
/// the buffer never reads a clock.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    /// The frame duration in 48 kHz ticks.
    frame_ticks: u32,
    /// Another frame step seen on consecutive packets, and how many times in a row.
    frame_candidate: (u32, u8),
    estimator: DelayEstimator,
    /// The instant that nanosecond offsets count from: the first packet's arrival.
    epoch: Option<Instant>,
    last_arrival: i64,
    /// The latest instant seen, an arrival or a poll, in nanoseconds since the epoch.
    last_now: i64,
    stream: Option<Stream>,
    /// The newest packet of the stream before the last reset, to recognise its stragglers.
    previous: Option<(SeqNo, MediaTimestamp)>,
    stats: JitterStats,
}

#[derive(Debug, Clone)]
struct Slot {
    /// Media timestamp, unwrapped.
    ts: i64,
    payload: Vec<u8>,
    silent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting until the first frame held is due at the target delay.
    Buffering,
    /// Playing a frame per poll, concealing what is missing.
    Playing,
}

/// One sender's stream, from its first packet (or restart) on.
#[derive(Debug, Clone)]
struct Stream {
    /// The highest sequence number seen and its unwrapped timestamp: the reference for
    /// unwrapping timestamps and checking that packets belong to this stream.
    newest_seq: SeqNo,
    newest_ts: i64,
    /// The previous packet to arrive, for learning the frame duration.
    last_seq: SeqNo,
    last_ts: i64,
    /// The first packet, which lets repeats of a `RESTART` flag through.
    start: (SeqNo, i64),
    /// The next frame to play and its expected timestamp.
    cursor: SeqNo,
    cursor_ts: i64,
    /// Frames from the cursor on, by sequence number; `None` where one has not arrived.
    /// Invariant: the last slot, if any, holds a frame.
    slots: VecDeque<Option<Slot>>,
    n_stored: usize,
    phase: Phase,
    /// For the frames just behind the cursor, oldest first: whether each had arrived by its
    /// turn (or has since, as a late packet).
    history: VecDeque<bool>,
    /// Consecutive polls for which the delay was above target by the shrink threshold (by a
    /// frame, without time stretching).
    excess_run: u32,
    /// Whether the delay is being brought down to target.
    shrinking: bool,
    /// Whether the last poll concealed while waiting for the frame at the cursor.
    holding: bool,
}

/// What a poll needs to know about time and targets, in nanoseconds and ticks.
#[derive(Debug, Clone, Copy)]
struct Pacing {
    now: i64,
    baseline: i64,
    target: i64,
    max_delay: i64,
    frame_ticks: i64,
    frame_nanos: i64,
    time_stretch: bool,
    shrink_threshold: i64,
    min_drop_frames: u32,
    patience_frames: u32,
}

impl Pacing {
    /// How long after its earliest possible arrival a frame with timestamp `ts` plays if it
    /// plays now.
    fn delay_of(&self, ts: i64) -> i64 {
        self.now - ticks_to_nanos(ts) - self.baseline
    }
}

/// Where an arriving packet went.
enum Arrival {
    Stored,
    Duplicate,
    Late,
}

impl JitterBuffer {
    /// A buffer with `config`, or the reason the config is unusable.
    pub fn new(config: JitterConfig) -> Result<Self, JitterError> {
        config.validate()?;
        let frame_ticks = frame_ticks(config.frame_duration).expect("validate checked the frame duration");
        let mut estimator = DelayEstimator::new(
            duration_to_nanos(config.baseline_window),
            duration_to_nanos(config.delay_memory),
            duration_to_nanos(config.max_delay),
            config.delay_quantile,
            duration_to_nanos(config.peak_threshold),
            duration_to_nanos(config.peak_period),
        );
        estimator.set_frame_nanos(ticks_to_nanos(i64::from(frame_ticks)));
        Ok(Self {
            config,
            frame_ticks,
            frame_candidate: (0, 0),
            estimator,
            epoch: None,
            last_arrival: 0,
            last_now: 0,
            stream: None,
            previous: None,
            stats: JitterStats::default(),
        })
    }

    /// The settings this buffer was created with.
    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// The duration of one frame: what the playout side should conceal or fill with silence
    /// per poll, and how often it should poll.
    pub fn frame_duration(&self) -> Duration {
        ticks_to_duration(i64::from(self.frame_ticks))
    }

    /// Takes in one audio packet that arrived at `now`. With `flags.restart` (the sender's
    /// `MediaFlags::RESTART` bit) the stream starts afresh at `seq` and `timestamp`;
    /// `flags.silent` lets the buffer drop the frame first when it holds too much.
    ///
    /// Duplicates and packets whose turn has passed are counted and discarded. A packet whose
    /// timestamp does not fit its sequence number (more than a second off) is taken as a
    /// restart the sender did not flag.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        seq: SeqNo,
        timestamp: MediaTimestamp,
        flags: PacketFlags,
        payload: Vec<u8>,
    ) {
        self.stats.packets_received += 1;
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = duration_to_nanos(now.saturating_duration_since(epoch)).max(self.last_arrival);
        self.last_arrival = arrival;
        self.last_now = self.last_now.max(arrival);
        let (restart, slot) = (flags.restart, Slot { ts: 0, payload, silent: flags.silent });

        let frame_ticks = i64::from(self.frame_ticks);
        let Some(stream) = &mut self.stream else {
            self.start_stream(arrival, seq, timestamp, slot);
            return;
        };
        let ts = stream.unwrap_ts(timestamp);
        let dist = seq.distance_from(stream.newest_seq);
        let fits = (ts - stream.newest_ts - i64::from(dist) * frame_ticks).abs() <= TIMESTAMP_JUMP_TICKS;
        let new_stream = if restart {
            !(fits && stream.is_young_and_holds(seq, ts, frame_ticks))
        } else if fits {
            false
        } else if self.is_straggler_of_previous_stream(seq, timestamp) {
            self.stats.packets_late += 1;
            return;
        } else {
            true
        };
        if new_stream {
            self.reset();
            self.start_stream(arrival, seq, timestamp, slot);
            return;
        }

        let stream = self.stream.as_mut().expect("checked above; only new_stream resets");
        let step = (seq == stream.last_seq.next()).then(|| ts - stream.last_ts);
        (stream.last_seq, stream.last_ts) = (seq, ts);
        if dist > 0 {
            (stream.newest_seq, stream.newest_ts) = (seq, ts);
        }
        let slot = Slot { ts, ..slot };
        let arrived = stream.insert(seq, slot, self.config.max_packets, frame_ticks, &mut self.stats);
        match arrived {
            Arrival::Duplicate => self.stats.duplicates += 1,
            Arrival::Stored | Arrival::Late => {
                if matches!(arrived, Arrival::Late) {
                    self.stats.packets_late += 1;
                }
                self.estimator.observe(arrival, arrival - ticks_to_nanos(ts));
                if let Some(step) = step {
                    self.learn_frame_step(step);
                }
            }
        }
    }

    /// Decides what to play for the next frame period, at `now`. Call it each time the playout
    /// side needs another frame of audio.
    #[must_use = "the playout decision says what to decode"]
    pub fn poll_playout(&mut self, now: Instant) -> Playout {
        let (Some(epoch), Some(baseline)) = (self.epoch, self.estimator.baseline()) else {
            return Playout::Silence;
        };
        let Some(stream) = &mut self.stream else {
            return Playout::Silence;
        };
        let frame_nanos = ticks_to_nanos(i64::from(self.frame_ticks));
        let frames_in = |duration: Duration| {
            let frames = duration.as_nanos().div_ceil(frame_nanos.unsigned_abs().into());
            u32::try_from(frames).unwrap_or(u32::MAX).max(1)
        };
        let now = duration_to_nanos(now.saturating_duration_since(epoch));
        self.last_now = self.last_now.max(now);
        let pacing = Pacing {
            now,
            baseline,
            target: target_nanos(&self.config, &self.estimator, now),
            max_delay: duration_to_nanos(self.config.max_delay),
            frame_ticks: i64::from(self.frame_ticks),
            frame_nanos,
            time_stretch: self.config.time_stretch,
            shrink_threshold: duration_to_nanos(self.config.shrink_threshold),
            min_drop_frames: frames_in(self.config.min_drop_interval),
            patience_frames: frames_in(self.config.shrink_patience),
        };
        let playout = stream.poll(&pacing, &mut self.stats);
        let played_ts = match &playout {
            Playout::Frame { timestamp, .. }
            | Playout::RecoverWithFec { timestamp, .. }
            | Playout::Conceal { timestamp, .. } => Some(*timestamp),
            Playout::Silence => None,
        };
        if let Some(timestamp) = played_ts {
            let delay = pacing.delay_of(stream.unwrap_ts_near_cursor(timestamp));
            self.stats.playout_delay = nanos_to_duration(delay);
        }
        playout
    }

    /// Counters and gauges as of the last call.
    pub fn stats(&self) -> JitterStats {
        let frame_ticks = i64::from(self.frame_ticks);
        let (buffered, n_stored) = match &self.stream {
            Some(stream) => (stream.buffered_ticks(frame_ticks), stream.n_stored),
            None => (0, 0),
        };
        JitterStats {
            packets_buffered: n_stored as u64,
            frame_duration: self.frame_duration(),
            target_delay: nanos_to_duration(target_nanos(&self.config, &self.estimator, self.last_now)),
            peak_delay: nanos_to_duration(self.estimator.peak_delay(self.last_now).unwrap_or(0)),
            buffered: ticks_to_duration(buffered),
            ..self.stats.clone()
        }
    }

    fn start_stream(&mut self, arrival: i64, seq: SeqNo, timestamp: MediaTimestamp, slot: Slot) {
        let ts = i64::from(timestamp.0);
        self.stream = Some(Stream::new(seq, Slot { ts, ..slot }));
        self.estimator.observe(arrival, arrival - ticks_to_nanos(ts));
    }

    /// Forgets the current stream, keeping what was learned about the network.
    fn reset(&mut self) {
        if let Some(old) = self.stream.take() {
            self.stats.packets_flushed += old.n_stored as u64;
            self.previous = Some((old.newest_seq, MediaTimestamp(old.newest_ts as u32)));
        }
        self.estimator.reset_baseline();
        self.stats.resets += 1;
    }

    fn is_straggler_of_previous_stream(&self, seq: SeqNo, timestamp: MediaTimestamp) -> bool {
        let Some((newest_seq, newest_ts)) = self.previous else {
            return false;
        };
        let dist = seq.distance_from(newest_seq);
        let max_behind = i32::try_from(self.config.max_packets).unwrap_or(i32::MAX);
        let expected = i64::from(dist) * i64::from(self.frame_ticks);
        (-max_behind..=STRAGGLER_AHEAD).contains(&dist)
            && (i64::from(timestamp.ticks_since(newest_ts)) - expected).abs() <= TIMESTAMP_JUMP_TICKS
    }

    /// Adopts another frame duration once consecutive packets agree on it.
    fn learn_frame_step(&mut self, step: i64) {
        let Some(step) = u32::try_from(step).ok().filter(|step| OPUS_FRAME_TICKS.contains(step)) else {
            return;
        };
        if step == self.frame_ticks {
            self.frame_candidate = (0, 0);
            return;
        }
        let (candidate, count) = self.frame_candidate;
        let count = if candidate == step { count + 1 } else { 1 };
        self.frame_candidate = (step, count);
        if count >= FRAME_LEARN_COUNT {
            self.frame_ticks = step;
            self.frame_candidate = (0, 0);
            self.estimator.set_frame_nanos(ticks_to_nanos(i64::from(step)));
        }
    }
}

/// The target delay at `now`: the recent delay, or the periodic peaks' if higher, plus the
/// margin, within bounds.
fn target_nanos(config: &JitterConfig, estimator: &DelayEstimator, now: i64) -> i64 {
    let delay = estimator.recent_delay().max(estimator.peak_delay(now).unwrap_or(0));
    let wanted = delay + duration_to_nanos(config.delay_margin);
    wanted.clamp(duration_to_nanos(config.min_delay), duration_to_nanos(config.max_delay))
}

impl Stream {
    fn new(seq: SeqNo, slot: Slot) -> Self {
        let ts = slot.ts;
        Self {
            newest_seq: seq,
            newest_ts: ts,
            last_seq: seq,
            last_ts: ts,
            start: (seq, ts),
            cursor: seq,
            cursor_ts: ts,
            slots: VecDeque::from([Some(slot)]),
            n_stored: 1,
            phase: Phase::Buffering,
            history: VecDeque::new(),
            excess_run: 0,
            shrinking: false,
            holding: false,
        }
    }

    /// The unwrapped timestamp nearest the newest packet's.
    fn unwrap_ts(&self, timestamp: MediaTimestamp) -> i64 {
        self.newest_ts + i64::from(timestamp.ticks_since(MediaTimestamp(self.newest_ts as u32)))
    }

    /// The unwrapped timestamp nearest the cursor's.
    fn unwrap_ts_near_cursor(&self, timestamp: MediaTimestamp) -> i64 {
        self.cursor_ts + i64::from(timestamp.ticks_since(MediaTimestamp(self.cursor_ts as u32)))
    }

    /// Whether this stream began less than [`RESTART_REPEAT_WINDOW`] frames ago and a packet
    /// at `seq` and `ts` belongs in it.
    fn is_young_and_holds(&self, seq: SeqNo, ts: i64, frame_ticks: i64) -> bool {
        let (start_seq, start_ts) = self.start;
        let dist = seq.distance_from(start_seq);
        self.newest_seq.distance_from(start_seq) < RESTART_REPEAT_WINDOW
            && (-RESTART_REPEAT_WINDOW..RESTART_REPEAT_WINDOW).contains(&dist)
            && (ts - start_ts - i64::from(dist) * frame_ticks).abs() <= frame_ticks
    }

    fn buffered_ticks(&self, frame_ticks: i64) -> i64 {
        let newest = self.slots.iter().rev().find_map(|slot| slot.as_ref().map(|slot| slot.ts));
        newest.map_or(0, |ts| (ts + frame_ticks - self.cursor_ts).max(0))
    }

    fn insert(
        &mut self,
        seq: SeqNo,
        slot: Slot,
        max_packets: usize,
        frame_ticks: i64,
        stats: &mut JitterStats,
    ) -> Arrival {
        let offset = seq.distance_from(self.cursor);
        let ts = slot.ts;
        let slot = Some(slot);
        if offset < 0 {
            let behind = offset.unsigned_abs() as usize;
            if self.history.is_empty() {
                // Nothing of this stream has played yet: an earlier packet becomes the head.
                if self.slots.len() + behind > max_packets {
                    return Arrival::Late;
                }
                for _ in 1..behind {
                    self.slots.push_front(None);
                }
                self.slots.push_front(slot);
                self.n_stored += 1;
                (self.cursor, self.cursor_ts) = (seq, ts);
                return Arrival::Stored;
            }
            if behind > self.history.len() {
                return Arrival::Late;
            }
            let idx = self.history.len() - behind;
            if self.history[idx] {
                return Arrival::Duplicate;
            }
            self.history[idx] = true;
            // Every `false` in the history was counted lost when the cursor passed it.
            stats.packets_lost = stats.packets_lost.saturating_sub(1);
            return Arrival::Late;
        }
        let mut offset = offset as usize;
        if offset >= max_packets {
            // Full: push the oldest frames out and line up again at the target delay.
            self.skip(offset + 1 - max_packets, frame_ticks, stats);
            self.phase = Phase::Buffering;
            offset = max_packets - 1;
        }
        if offset >= self.slots.len() {
            self.slots.resize_with(offset + 1, || None);
        }
        if self.slots[offset].is_some() {
            return Arrival::Duplicate;
        }
        self.slots[offset] = slot;
        self.n_stored += 1;
        Arrival::Stored
    }

    /// Moves the cursor past its frame, returning the frame if it was here.
    fn advance(&mut self, frame_ticks: i64) -> Option<Slot> {
        let slot = self.slots.pop_front().flatten();
        match &slot {
            Some(slot) => {
                self.n_stored -= 1;
                self.cursor_ts = slot.ts + frame_ticks;
            }
            None => self.cursor_ts += frame_ticks,
        }
        self.history.push_back(slot.is_some());
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        self.cursor = self.cursor.next();
        self.holding = false;
        slot
    }

    /// Moves the cursor `n` frames on, flushing what is held and counting what is missing as
    /// lost, in time proportional to what is held rather than to `n`.
    fn skip(&mut self, n: usize, frame_ticks: i64, stats: &mut JitterStats) {
        let held = n.min(self.slots.len());
        for _ in 0..held {
            match self.advance(frame_ticks) {
                Some(_) => stats.packets_flushed += 1,
                None => stats.packets_lost += 1,
            }
        }
        let beyond = n - held;
        if beyond > 0 {
            stats.packets_lost += beyond as u64;
            self.cursor = SeqNo(self.cursor.0.wrapping_add(beyond as u32));
            self.cursor_ts += beyond as i64 * frame_ticks;
            for _ in 0..beyond.min(HISTORY) {
                self.history.push_back(false);
            }
            while self.history.len() > HISTORY {
                self.history.pop_front();
            }
        }
    }

    fn poll(&mut self, pacing: &Pacing, stats: &mut JitterStats) -> Playout {
        if self.phase == Phase::Buffering {
            return self.rebuffer(pacing, stats);
        }
        let head_ts = match self.slots.front() {
            Some(Some(head)) => head.ts,
            Some(None) => return self.fill_gap(pacing, stats),
            None => return self.underrun(pacing, stats),
        };
        if head_ts - self.cursor_ts >= pacing.frame_ticks / 2 && pacing.delay_of(head_ts) < pacing.target {
            // The sender left a gap in media time (it paused, or sent nothing during silence):
            // fill it until the next frame is due.
            stats.frames_concealed += 1;
            return self.conceal_cursor();
        }
        if self.should_shrink(head_ts, pacing) {
            return self.shrink(pacing, stats);
        }
        self.play_head(pacing, stats, false)
    }

    /// Whether the delay is to be brought down: it stayed above target by the shrink
    /// threshold (a frame, without time stretching) for the patience, and it is not yet back
    /// at target (within a frame of it, without time stretching).
    fn should_shrink(&mut self, head_ts: i64, pacing: &Pacing) -> bool {
        let excess = pacing.delay_of(head_ts) - pacing.target;
        let (threshold, settled) = if pacing.time_stretch {
            (pacing.shrink_threshold, excess <= pacing.shrink_threshold / 2)
        } else {
            (pacing.frame_nanos, excess < pacing.frame_nanos)
        };
        if self.shrinking {
            self.shrinking = !settled;
            return self.shrinking;
        }
        if excess < threshold {
            self.excess_run = 0;
            return false;
        }
        self.excess_run += 1;
        let wait = if pacing.time_stretch {
            pacing.patience_frames
        } else {
            // Dropped speech is heard: wait longer for a small excess than for a large one.
            let excess_frames = u32::try_from(excess / pacing.frame_nanos).unwrap_or(u32::MAX).max(1);
            pacing.patience_frames.div_ceil(excess_frames).max(pacing.min_drop_frames)
        };
        self.shrinking = self.excess_run >= wait;
        self.shrinking
    }

    /// Brings the delay towards target: drops the silent frames at the head while the delay
    /// stays a frame or more above target, then plays the next frame accelerated (or, without
    /// time stretching, drops one more frame at most every `min_drop_interval`).
    fn shrink(&mut self, pacing: &Pacing, stats: &mut JitterStats) -> Playout {
        loop {
            let Some(Some(head)) = self.slots.front() else {
                debug_assert!(false, "shrink is only called with the head frame present");
                return Playout::Silence;
            };
            let excess = pacing.delay_of(head.ts) - pacing.target;
            let settled = if pacing.time_stretch { pacing.shrink_threshold / 2 } else { 0 };
            if excess <= settled {
                self.shrinking = false;
                self.excess_run = 0;
                return self.play_head(pacing, stats, false);
            }
            let next_follows =
                matches!(self.slots.get(1), Some(Some(next)) if next.ts - head.ts <= pacing.frame_ticks);
            if excess >= pacing.frame_nanos && next_follows {
                let silent = head.silent;
                if silent || (!pacing.time_stretch && self.excess_run >= pacing.min_drop_frames) {
                    self.advance(pacing.frame_ticks);
                    stats.frames_dropped += 1;
                    if silent {
                        stats.silent_frames_dropped += 1;
                    } else {
                        // The next speech frame dropped waits `min_drop_interval`.
                        self.excess_run = 0;
                    }
                    continue;
                }
            }
            if !pacing.time_stretch {
                self.excess_run += 1;
            }
            return self.play_head(pacing, stats, pacing.time_stretch);
        }
    }

    /// Plays the frame at the cursor, which must be here.
    fn play_head(&mut self, pacing: &Pacing, stats: &mut JitterStats, accelerate: bool) -> Playout {
        let seq = self.cursor;
        match self.advance(pacing.frame_ticks) {
            Some(slot) => {
                stats.frames_played += 1;
                if accelerate {
                    stats.frames_accelerated += 1;
                }
                let timestamp = MediaTimestamp(slot.ts as u32);
                Playout::Frame { seq, timestamp, payload: slot.payload, accelerate }
            }
            None => {
                debug_assert!(false, "play_head is only called with the head frame present");
                Playout::Silence
            }
        }
    }

    fn conceal_cursor(&self) -> Playout {
        Playout::Conceal { seq: self.cursor, timestamp: MediaTimestamp(self.cursor_ts as u32) }
    }

    /// The frame due now is missing but a later one is here: give it up, unless the delay is
    /// still below target.
    fn fill_gap(&mut self, pacing: &Pacing, stats: &mut JitterStats) -> Playout {
        let Some((next_idx, next_ts)) =
            self.slots.iter().enumerate().find_map(|(idx, slot)| slot.as_ref().map(|slot| (idx, slot.ts)))
        else {
            return self.underrun(pacing, stats);
        };
        if ticks_to_nanos(next_ts - self.cursor_ts) > pacing.max_delay {
            // Too long a gap to conceal frame by frame: line up on the next frame instead.
            self.skip(next_idx, pacing.frame_ticks, stats);
            self.phase = Phase::Buffering;
            return self.rebuffer(pacing, stats);
        }
        let delay = pacing.delay_of(self.cursor_ts);
        if delay < pacing.target {
            // The delay is below what the measured jitter calls for, so the frame is more
            // likely reordered than lost: wait for it, which also brings the delay up.
            return self.underrun(pacing, stats);
        }
        let (seq, timestamp) = (self.cursor, MediaTimestamp(self.cursor_ts as u32));
        let concealed_already = self.holding;
        self.advance(pacing.frame_ticks);
        stats.packets_lost += 1;
        if concealed_already && delay >= pacing.target + pacing.frame_nanos {
            // The last poll concealed while waiting for this frame, and the wait put the delay
            // a frame above target: let that concealment stand for the lost frame and go on
            // with the next, rather than conceal it a second time.
            return self.poll(pacing, stats);
        }
        match self.slots.front() {
            Some(Some(next)) => {
                stats.fec_recovered += 1;
                Playout::RecoverWithFec { seq, timestamp, next_payload: next.payload.clone() }
            }
            _ => {
                stats.frames_concealed += 1;
                Playout::Conceal { seq, timestamp }
            }
        }
    }

    /// Nothing is here: wait for the frame due now, concealing meanwhile, unless waiting
    /// longer would take the delay past its maximum.
    fn underrun(&mut self, pacing: &Pacing, stats: &mut JitterStats) -> Playout {
        self.excess_run = 0;
        self.shrinking = false;
        if pacing.delay_of(self.cursor_ts) + pacing.frame_nanos > pacing.max_delay {
            self.phase = Phase::Buffering;
            return Playout::Silence;
        }
        stats.frames_concealed += 1;
        self.holding = true;
        self.conceal_cursor()
    }

    /// Lines up on the first frame held that is due at the target delay, dropping frames that
    /// are already more than a frame past it, and starts playing once one is due.
    fn rebuffer(&mut self, pacing: &Pacing, stats: &mut JitterStats) -> Playout {
        loop {
            let Some(first) = self.slots.iter().position(Option::is_some) else {
                return Playout::Silence;
            };
            self.skip(first, pacing.frame_ticks, stats);
            let Some(Some(head)) = self.slots.front() else {
                return Playout::Silence;
            };
            self.cursor_ts = head.ts;
            let delay = pacing.delay_of(head.ts);
            if delay >= pacing.target + pacing.frame_nanos {
                self.advance(pacing.frame_ticks);
                stats.frames_dropped += 1;
                continue;
            }
            if delay < pacing.target {
                return Playout::Silence;
            }
            self.phase = Phase::Playing;
            self.excess_run = 0;
            self.shrinking = false;
            return self.play_head(pacing, stats, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Virtual time: an arbitrary origin plus milliseconds.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Self {
            Self(Instant::now())
        }

        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    /// The timestamp of 20 ms frame number `frame`.
    fn ts(frame: u32) -> MediaTimestamp {
        MediaTimestamp(frame.wrapping_mul(960))
    }

    /// A 20 ms minimum target and a 10 ms margin: round numbers that make the expected
    /// timings below easy to follow, independent of the defaults.
    fn test_config() -> JitterConfig {
        JitterConfig {
            min_delay: Duration::from_millis(20),
            delay_margin: Duration::from_millis(10),
            ..JitterConfig::default()
        }
    }

    fn buffer() -> JitterBuffer {
        JitterBuffer::new(test_config()).expect("the test config is valid")
    }

    /// A buffer allowed to wait up to 500 ms, so that a 400 ms stall is waited out rather than
    /// given up: the unit tests below check waiting and shedding on their own.
    fn patient_buffer() -> JitterBuffer {
        let config = JitterConfig { max_delay: Duration::from_millis(500), ..test_config() };
        JitterBuffer::new(config).expect("a 500 ms maximum is valid")
    }

    fn send(buffer: &mut JitterBuffer, clock: &Clock, at_ms: u64, seq: u32, frame: u32) {
        buffer.handle_packet(
            clock.at(at_ms),
            SeqNo(seq),
            ts(frame),
            PacketFlags::SPEECH,
            seq.to_be_bytes().to_vec(),
        );
    }

    fn frame(seq: u32, frame: u32) -> Playout {
        Playout::Frame {
            seq: SeqNo(seq),
            timestamp: ts(frame),
            payload: seq.to_be_bytes().to_vec(),
            accelerate: false,
        }
    }

    /// Frames `frames` arrive on time (frame `i` at `20 i` ms) and each is polled 20 ms
    /// later; returns what the polls gave.
    fn steady(buffer: &mut JitterBuffer, clock: &Clock, frames: std::ops::Range<u32>) -> Vec<Playout> {
        frames
            .map(|i| {
                send(buffer, clock, u64::from(i) * 20, i, i);
                buffer.poll_playout(clock.at(u64::from(i) * 20 + 20))
            })
            .collect()
    }

    #[test]
    fn silence_until_the_first_packet_has_waited_the_target_delay() {
        let (mut b, clock) = (buffer(), Clock::new());
        assert_eq!(b.poll_playout(clock.at(0)), Playout::Silence);
        send(&mut b, &clock, 0, 10, 0);
        assert_eq!(b.poll_playout(clock.at(10)), Playout::Silence);
        assert_eq!(b.poll_playout(clock.at(20)), frame(10, 0));
        let stats = b.stats();
        assert_eq!((stats.frames_played, stats.packets_buffered), (1, 0));
        assert_eq!(stats.target_delay, Duration::from_millis(20));
        assert_eq!(stats.playout_delay, Duration::from_millis(20));
    }

    #[test]
    fn a_missing_frame_is_recovered_from_the_next_frames_fec() {
        let (mut b, clock) = (buffer(), Clock::new());
        assert_eq!(steady(&mut b, &clock, 0..6), (0..6).map(|i| frame(i, i)).collect::<Vec<_>>());
        send(&mut b, &clock, 140, 7, 7);
        let recovered =
            Playout::RecoverWithFec { seq: SeqNo(6), timestamp: ts(6), next_payload: vec![0, 0, 0, 7] };
        assert_eq!(b.poll_playout(clock.at(140)), recovered);
        assert_eq!(b.poll_playout(clock.at(160)), frame(7, 7));
        let stats = b.stats();
        assert_eq!((stats.fec_recovered, stats.packets_lost, stats.frames_played), (1, 1, 7));

        // The lost frame turning up now is late, and no longer lost.
        send(&mut b, &clock, 165, 6, 6);
        let stats = b.stats();
        assert_eq!((stats.packets_late, stats.packets_lost, stats.duplicates), (1, 0, 0));
    }

    #[test]
    fn two_missing_frames_are_concealed_then_recovered() {
        let (mut b, clock) = (buffer(), Clock::new());
        steady(&mut b, &clock, 0..6);
        send(&mut b, &clock, 160, 8, 8);
        assert_eq!(b.poll_playout(clock.at(140)), Playout::Conceal { seq: SeqNo(6), timestamp: ts(6) });
        assert!(matches!(b.poll_playout(clock.at(160)), Playout::RecoverWithFec { seq: SeqNo(7), .. }));
        assert_eq!(b.poll_playout(clock.at(180)), frame(8, 8));
        assert_eq!(b.stats().packets_lost, 2);
    }

    #[test]
    fn an_underrun_waits_for_the_frame_and_the_delay_grows_by_a_frame() {
        let (mut b, clock) = (buffer(), Clock::new());
        steady(&mut b, &clock, 0..5);
        assert_eq!(b.poll_playout(clock.at(120)), Playout::Conceal { seq: SeqNo(5), timestamp: ts(5) });
        send(&mut b, &clock, 125, 5, 5);
        send(&mut b, &clock, 125, 6, 6);
        assert_eq!(b.poll_playout(clock.at(140)), frame(5, 5));
        assert_eq!(b.stats().playout_delay, Duration::from_millis(40));
        assert_eq!(b.poll_playout(clock.at(160)), frame(6, 6));
        let stats = b.stats();
        assert_eq!((stats.frames_concealed, stats.packets_lost, stats.frames_dropped), (1, 0, 0));
    }

    #[test]
    fn waiting_stops_at_the_maximum_delay_and_playback_resumes_at_the_target() {
        let (mut b, clock) = (patient_buffer(), Clock::new());
        steady(&mut b, &clock, 0..5);
        // Frame 5 plays 20 ms after it is due at 100 ms; waiting is allowed while the delay
        // stays within 500 ms.
        let waited: Vec<_> = (6..=30).map(|poll| b.poll_playout(clock.at(poll * 20))).collect();
        assert!(
            waited[..24].iter().all(|p| matches!(p, Playout::Conceal { seq: SeqNo(5), .. })),
            "{waited:?}"
        );
        assert_eq!(waited[24], Playout::Silence);
        assert_eq!(b.poll_playout(clock.at(700)), Playout::Silence);

        // The sender comes back at frame 40; frames 5 to 39 never arrive.
        send(&mut b, &clock, 800, 40, 40);
        assert_eq!(b.poll_playout(clock.at(810)), Playout::Silence);
        assert_eq!(b.poll_playout(clock.at(820)), frame(40, 40));
        let stats = b.stats();
        assert_eq!((stats.frames_concealed, stats.packets_lost), (24, 35));
        assert_eq!(stats.playout_delay, Duration::from_millis(20));
    }

    #[test]
    fn duplicates_are_counted_and_played_once() {
        let (mut b, clock) = (buffer(), Clock::new());
        steady(&mut b, &clock, 0..3);
        send(&mut b, &clock, 60, 3, 3);
        send(&mut b, &clock, 61, 3, 3);
        send(&mut b, &clock, 62, 1, 1);
        assert_eq!(b.poll_playout(clock.at(80)), frame(3, 3));
        assert_eq!(b.poll_playout(clock.at(100)), Playout::Conceal { seq: SeqNo(4), timestamp: ts(4) });
        let stats = b.stats();
        assert_eq!((stats.packets_received, stats.duplicates, stats.frames_played), (6, 2, 4));
    }

    #[test]
    fn playout_continues_across_sequence_and_timestamp_wrap_around() {
        let (mut b, clock) = (buffer(), Clock::new());
        let first = u32::MAX - 3;
        for i in 0..8u32 {
            let seq = first.wrapping_add(i);
            let timestamp = MediaTimestamp((u32::MAX - 959).wrapping_add(i * 960));
            b.handle_packet(
                clock.at(u64::from(i) * 20),
                SeqNo(seq),
                timestamp,
                PacketFlags::SPEECH,
                vec![i as u8],
            );
            let played = b.poll_playout(clock.at(u64::from(i) * 20 + 20));
            assert_eq!(
                played,
                Playout::Frame { seq: SeqNo(seq), timestamp, payload: vec![i as u8], accelerate: false }
            );
        }
        assert_eq!(b.stats().resets, 0);
    }

    #[test]
    fn a_restart_flag_starts_afresh_and_repeats_of_it_do_not() {
        let (mut b, clock) = (buffer(), Clock::new());
        steady(&mut b, &clock, 0..10);
        send(&mut b, &clock, 200, 10, 10);
        b.handle_packet(clock.at(205), SeqNo(777), MediaTimestamp(12_345), PacketFlags::RESTART, vec![7]);
        b.handle_packet(
            clock.at(225),
            SeqNo(778),
            MediaTimestamp(12_345 + 960),
            PacketFlags::RESTART,
            vec![8],
        );
        let stats = b.stats();
        assert_eq!((stats.resets, stats.packets_flushed, stats.packets_buffered), (1, 1, 2));
        assert_eq!(b.poll_playout(clock.at(220)), Playout::Silence);
        let played = b.poll_playout(clock.at(240));
        assert_eq!(
            played,
            Playout::Frame {
                seq: SeqNo(777),
                timestamp: MediaTimestamp(12_345),
                payload: vec![7],
                accelerate: false
            }
        );
    }

    #[test]
    fn an_unflagged_jump_starts_afresh_and_stragglers_of_the_old_stream_are_late() {
        let (mut b, clock) = (buffer(), Clock::new());
        steady(&mut b, &clock, 0..10);
        b.handle_packet(clock.at(200), SeqNo(5000), MediaTimestamp(3_000_000), PacketFlags::SPEECH, vec![1]);
        send(&mut b, &clock, 201, 10, 10);
        b.handle_packet(clock.at(220), SeqNo(5001), MediaTimestamp(3_000_960), PacketFlags::SPEECH, vec![2]);
        let stats = b.stats();
        assert_eq!((stats.resets, stats.packets_late, stats.packets_buffered), (1, 1, 2));
        assert_eq!(b.poll_playout(clock.at(220)), frame_of(5000, 3_000_000, 1));
    }

    fn frame_of(seq: u32, timestamp: u32, byte: u8) -> Playout {
        Playout::Frame {
            seq: SeqNo(seq),
            timestamp: MediaTimestamp(timestamp),
            payload: vec![byte],
            accelerate: false,
        }
    }

    #[test]
    fn the_frame_duration_is_learned_from_timestamps() {
        let (mut b, clock) = (buffer(), Clock::new());
        assert_eq!(b.frame_duration(), Duration::from_millis(20));
        for i in 0..10u32 {
            b.handle_packet(
                clock.at(u64::from(i) * 10),
                SeqNo(i),
                MediaTimestamp(i * 480),
                PacketFlags::SPEECH,
                vec![],
            );
            let played = b.poll_playout(clock.at(u64::from(i) * 10 + 20));
            assert!(matches!(played, Playout::Frame { seq, .. } if seq == SeqNo(i)), "{i}: {played:?}");
        }
        assert_eq!(b.frame_duration(), Duration::from_millis(10));
        assert_eq!(b.stats().frames_concealed, 0);
    }

    #[test]
    fn a_gap_in_media_time_is_filled_until_the_next_frame_is_due() {
        // The sender sent nothing for 200 ms of silence but kept its sequence numbers
        // contiguous (as with Opus DTX): seq 10 carries frame 20.
        let (mut b, clock) = (buffer(), Clock::new());
        steady(&mut b, &clock, 0..10);
        let mut concealed = 0;
        for poll in 11..=20 {
            assert!(matches!(b.poll_playout(clock.at(poll * 20)), Playout::Conceal { seq: SeqNo(10), .. }));
            concealed += 1;
        }
        send(&mut b, &clock, 400, 10, 20);
        assert_eq!(b.poll_playout(clock.at(420)), frame(10, 20));
        let stats = b.stats();
        assert_eq!((stats.resets, stats.frames_concealed), (0, concealed));
        assert_eq!(stats.playout_delay, Duration::from_millis(20));
        send(&mut b, &clock, 420, 11, 21);
        assert_eq!(b.poll_playout(clock.at(440)), frame(11, 21));
    }

    #[test]
    fn without_time_stretching_the_burst_after_a_stall_is_shed_a_frame_at_a_time() {
        let config =
            JitterConfig { max_delay: Duration::from_millis(500), time_stretch: false, ..test_config() };
        let (mut b, clock) = (JitterBuffer::new(config).unwrap(), Clock::new());
        steady(&mut b, &clock, 0..50);
        // A 400 ms stall: frames 50 to 69 all arrive at 1380 ms, then on time again.
        let mut played = Vec::new();
        for i in 50..150u32 {
            let arrival = if i < 69 { None } else { Some(u64::from(i) * 20) };
            if i == 69 {
                for held in 50..69 {
                    send(&mut b, &clock, 1380, held, held);
                }
            }
            if let Some(arrival) = arrival {
                send(&mut b, &clock, arrival, i, i);
            }
            played.push(b.poll_playout(clock.at(u64::from(i) * 20 + 20)));
        }
        let seqs: Vec<u32> = played
            .iter()
            .filter_map(|p| match p {
                Playout::Frame { seq, .. } => Some(seq.0),
                _ => None,
            })
            .collect();
        let skips: Vec<usize> =
            seqs.windows(2).enumerate().filter(|(_, w)| w[1] != w[0] + 1).map(|(i, _)| i).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1 || w[1] == w[0] + 2),
            "one frame at a time: {seqs:?}"
        );
        assert!(skips.windows(2).all(|w| w[1] - w[0] >= 3), "drops spaced at least 60 ms apart: {skips:?}");
        let stats = b.stats();
        assert_eq!(stats.frames_dropped as usize, skips.len());
        assert!(stats.playout_delay <= stats.target_delay + Duration::from_millis(20), "{stats:?}");
        assert_eq!(stats.packets_lost, 0);
        let concealed = played.iter().filter(|p| matches!(p, Playout::Conceal { .. })).count();
        assert_eq!(concealed, 19, "the stall is concealed, 20 ms after frame 49 until frame 50 arrives");
    }

    /// Plays frames 0..n arriving on time except a 400 ms stall after frame 49, polling as a
    /// player that honours `accelerate` would: an accelerated frame lasts 15 ms, not 20.
    /// Returns what was played and when, in ms.
    fn play_through_a_stall(
        b: &mut JitterBuffer,
        clock: &Clock,
        silent: impl Fn(u32) -> bool,
    ) -> Vec<(u64, Playout)> {
        let mut played = Vec::new();
        let mut next = 0u32;
        let mut now = 20u64;
        while now < 4_000 {
            while next < 200 {
                let arrival = if (50..69).contains(&next) { 1380 } else { u64::from(next) * 20 };
                if arrival > now {
                    break;
                }
                let flags = if silent(next) { PacketFlags::SILENT } else { PacketFlags::SPEECH };
                b.handle_packet(clock.at(arrival), SeqNo(next), ts(next), flags, next.to_be_bytes().to_vec());
                next += 1;
            }
            let playout = b.poll_playout(clock.at(now));
            let step = if matches!(playout, Playout::Frame { accelerate: true, .. }) { 15 } else { 20 };
            played.push((now, playout));
            now += step;
        }
        played
    }

    #[test]
    fn with_time_stretching_speech_is_compressed_not_dropped_and_the_delay_comes_back() {
        let (mut b, clock) = (patient_buffer(), Clock::new());
        let played = play_through_a_stall(&mut b, &clock, |_| false);
        let stats = b.stats();
        assert_eq!(stats.frames_dropped, 0, "no speech is dropped: {stats:?}");
        assert!(
            stats.frames_accelerated >= 60,
            "the 380 ms backlog is played 5 ms shorter a frame: {stats:?}"
        );
        // Back at target within two seconds of the burst.
        let last_accelerated = played
            .iter()
            .filter(|(_, p)| matches!(p, Playout::Frame { accelerate: true, .. }))
            .map(|(at, _)| *at)
            .max()
            .unwrap();
        assert!(last_accelerated < 1380 + 2_000, "still compressing at {last_accelerated} ms");
        assert!(stats.playout_delay <= stats.target_delay + Duration::from_millis(20), "{stats:?}");
        let seqs: Vec<u32> = played
            .iter()
            .filter_map(|(_, p)| match p {
                Playout::Frame { seq, .. } => Some(seq.0),
                _ => None,
            })
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "every frame played, in order");
    }

    #[test]
    fn silent_frames_are_dropped_before_speech_is_compressed() {
        let (mut b, clock) = (patient_buffer(), Clock::new());
        // The talker paused during the stall: frames 50 to 99 are silence, and the backlog
        // goes with them.
        play_through_a_stall(&mut b, &clock, |seq| (50..100).contains(&seq));
        let stats = b.stats();
        assert!(stats.silent_frames_dropped >= 15, "{stats:?}");
        assert_eq!(stats.frames_dropped, stats.silent_frames_dropped, "only silence dropped: {stats:?}");
        assert!(stats.frames_accelerated < 5, "little speech compressed: {stats:?}");
        assert!(stats.playout_delay <= stats.target_delay + Duration::from_millis(20), "{stats:?}");
    }

    #[test]
    fn the_buffer_holds_at_most_max_packets() {
        let config = JitterConfig { max_packets: 16, ..JitterConfig::default() };
        let (mut b, clock) = (JitterBuffer::new(config).unwrap(), Clock::new());
        steady(&mut b, &clock, 0..5);
        for i in 5..100 {
            send(&mut b, &clock, 100, i, i);
            assert!(b.stats().packets_buffered <= 16);
        }
        let stats = b.stats();
        assert_eq!(stats.packets_flushed + stats.packets_buffered, 95);
        assert_eq!(stats.packets_buffered, 16);
    }

    #[test]
    fn invalid_settings_are_refused() {
        let config = JitterConfig { max_delay: Duration::from_millis(10), ..JitterConfig::default() };
        assert!(matches!(
            JitterBuffer::new(config),
            Err(JitterError::InvalidConfig { setting: "max_delay", .. })
        ));
    }
}
