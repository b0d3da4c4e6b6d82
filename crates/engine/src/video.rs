//! Video: the send thread (source → rate control → JPEG → transport) and the decode worker
//! (the connection's video frames → JPEG → the call core's [`LipSync`] per peer → the newest
//! frame due, for the screen).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chinwag_call::{LOWER_LAYERS, LipSync, LowerLayer, MediaStamper, VideoLevel, VideoRate};
use chinwag_capture::{CameraSource, ClipSource, FrameContent, TestPatternSource, VideoSource};
use chinwag_codec::{DEFAULT_JPEG_QUALITY, JpegDecoder, JpegEncoder, VideoFrame, scale};
use chinwag_proto::{MediaKind, ParticipantId, RelayTime, VideoLayer};
use chinwag_rate::{LinkSignals, RateConfig};
use chinwag_transport::ReceivedMedia;
use crossbeam_channel::{Receiver, select};
use tracing::warn;

use crate::stats::VideoPart;
use crate::{CallEvent, Events, Shared, file_name};

/// Where the call's outgoing video comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoInput {
    /// Send no video.
    None,
    /// The synthetic test pattern (colour bars, a moving box, a frame counter).
    Pattern,
    /// A camera: `None` for the first one.
    Camera(Option<String>),
    /// A camera-like clip: an `.mjpeg` file of JPEG frames, looped.
    Clip(PathBuf),
}

/// How the call sends video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoSettings {
    pub input: VideoInput,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl Default for VideoSettings {
    fn default() -> Self {
        Self { input: VideoInput::None, width: 640, height: 480, fps: 30 }
    }
}

pub(crate) enum VideoCommand {
    Input(VideoInput),
    Leave,
}

/// Where video's rate starts before the link has shown what it carries: enough for a
/// camera-like 640×480 picture at 15 fps, little enough not to flood a home uplink while the
/// controller finds it (it climbs by half again each second).
const START_BPS: f64 = 1_000_000.0;

/// A peer's smaller layer is not shown while a larger one arrived this recently.
const LARGER_LAYER_HOLD: Duration = Duration::from_secs(1);

/// How often the decoder publishes its figures.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// What is on screen: each peer's frames on their way through lip sync, and the self-view.
#[derive(Default)]
pub(crate) struct Screen {
    peers: Mutex<HashMap<ParticipantId, LipSync<Arc<VideoFrame>>>>,
    preview: Mutex<Option<Arc<VideoFrame>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Screen {
    /// The newest frame of `peer` that is due now.
    pub(crate) fn frame(&self, peer: ParticipantId) -> Option<Arc<VideoFrame>> {
        lock(&self.peers).get_mut(&peer).and_then(|sync| sync.poll_frame(Instant::now()))
    }

    pub(crate) fn preview(&self) -> Option<Arc<VideoFrame>> {
        lock(&self.preview).clone()
    }
}

/// The send thread for video.
pub(crate) fn run_send(
    settings: VideoSettings,
    shared: Arc<Shared>,
    commands: Receiver<VideoCommand>,
    events: Events,
) {
    let mut input = settings.input.clone();
    let mut source: Option<Box<dyn VideoSource>> = None;
    let mut encoder = JpegEncoder::new(DEFAULT_JPEG_QUALITY).expect("the default quality is valid");
    let mut decoder = JpegDecoder::default();
    let mut rate = new_rate(&settings);
    let mut replaced_seen = shared.transport.stats().video_replaced;
    let mut stamper = MediaStamper::new(MediaKind::Video);
    let mut lower_layers = LOWER_LAYERS.map(LowerLayerSender::new);
    let mut packet = Vec::new();
    let mut first_capture: Option<Instant> = None;
    let mut logged = Instant::now();
    loop {
        let wait = if input == VideoInput::None || !shared.transport.is_connected() {
            Duration::from_millis(20)
        } else {
            Duration::ZERO
        };
        match commands.recv_timeout(wait) {
            Ok(VideoCommand::Input(new_input)) => {
                input = new_input;
                source = None;
                first_capture = None;
                stamper.restart();
                for lower in &mut lower_layers {
                    lower.restart();
                }
                // Another source costs other bytes: learn them afresh.
                rate = new_rate(&settings);
                continue;
            }
            Ok(VideoCommand::Leave) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                shared.set_camera(false);
                return;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        if input == VideoInput::None || !shared.transport.is_connected() {
            shared.set_camera(false);
            if !shared.transport.is_connected() {
                // A new connection is a new link (and what piled up while the old one died
                // says nothing about it): learn it afresh.
                rate = new_rate(&settings);
                replaced_seen = shared.transport.stats().video_replaced;
            }
            continue;
        }
        if source.is_none() {
            match open_source(&input, &settings) {
                Ok(opened) => {
                    source = Some(opened);
                    shared.set_camera(true);
                }
                Err(error) => {
                    events.send(CallEvent::VideoStopped { error });
                    input = VideoInput::None;
                    continue;
                }
            }
        }
        let Some(video) = source.as_mut() else { continue };
        let captured = match video.next_frame() {
            Ok(captured) => captured,
            Err(error) => {
                events.send(CallEvent::VideoStopped { error: error.to_string() });
                input = VideoInput::None;
                source = None;
                continue;
            }
        };
        let now = Instant::now();
        let link = shared.transport.link_state();
        let replaced = shared.transport.stats().video_replaced;
        let backlog = replaced > replaced_seen;
        replaced_seen = replaced;
        rate.handle_link(
            now,
            LinkSignals { queue_delay: link.queue_delay, delivered_bps: link.delivered_bps, backlog },
        );
        let (source_width, source_height) = match &captured.content {
            FrameContent::Jpeg { width, height, .. } => (*width, *height),
            FrameContent::Rgba(frame) => (frame.width, frame.height),
        };
        let source_pixels = u64::from(source_width) * u64::from(source_height);
        let Some(level) = rate.poll_frame(now, source_pixels) else { continue };
        let best = level.size_divisor == 1 && level.quality == DEFAULT_JPEG_QUALITY;
        let raw = match captured.content {
            // The camera's own JPEG goes out as it is while the budget has room for the best:
            // the rate control has learnt what its frames cost from the frames sent.
            FrameContent::Jpeg { data, .. } if best => {
                packet = data;
                None
            }
            FrameContent::Jpeg { data, .. } => match decoder.decode(&data) {
                Ok(frame) => Some(frame),
                Err(error) => {
                    warn!(%error, "the camera sent a frame that does not decode");
                    continue;
                }
            },
            FrameContent::Rgba(frame) => Some(frame),
        };
        let mut sent_pixels = source_pixels;
        // The picture as sent, kept for the lower layers and the preview.
        let mut sent_frame = None;
        if let Some(frame) = raw {
            let frame = if level.size_divisor > 1 {
                scale(
                    &frame,
                    (frame.width / level.size_divisor).max(16),
                    (frame.height / level.size_divisor).max(16),
                )
            } else {
                frame
            };
            sent_pixels = u64::from(frame.width) * u64::from(frame.height);
            let _ = encoder.set_quality(level.quality);
            if let Err(error) = encoder.encode(&frame, &mut packet) {
                warn!(%error, "could not encode a video frame");
                continue;
            }
            let frame = Arc::new(frame);
            *lock(&shared.video.preview) = Some(Arc::clone(&frame));
            sent_frame = Some(frame);
        }
        rate.handle_frame_sent(level, sent_pixels, packet.len());
        if now.saturating_duration_since(logged) >= Duration::from_secs(1) {
            logged = now;
            tracing::debug!(
                target_kbps = rate.video_bps() / 1000.0,
                fps = level.fps,
                quality = level.quality,
                size_divisor = level.size_divisor,
                frame_bytes = packet.len(),
                queue_ms = link.queue_delay.map(|d| d.as_secs_f64() * 1000.0),
                delivered_kbps = link.delivered_bps.map(|bps| bps / 1000.0),
                backlog,
                "video rate"
            );
        }
        let Some(capture_time) = shared.transport.relay_time(captured.captured_at) else { continue };
        let first = *first_capture.get_or_insert(captured.captured_at);
        let ticks = captured.captured_at.saturating_duration_since(first).as_micros() as u64 * 90 / 1000;
        let header = stamper.stamp(ticks, capture_time);
        if !shared.transport.send_media(&header, &packet) {
            continue;
        }
        shared.board.video_frames_sent.fetch_add(1, Relaxed);
        shared.board.video_bytes_sent.fetch_add(packet.len() as u64, Relaxed);
        // The lower layers, for receivers on slow downlinks, while the full one is larger.
        let mut picture = sent_frame;
        for lower in &mut lower_layers {
            if !lower.shape.goes_beside(level) || lower.next_at.is_some_and(|at| now < at) {
                continue;
            }
            // A little early is on time, as for the full layer.
            lower.next_at = Some(now + Duration::from_secs_f64(0.9 / lower.shape.level.fps));
            if picture.is_none() {
                // The camera's own JPEG went out: decode it for this.
                picture = decoder.decode(&packet).ok().map(Arc::new);
            }
            let Some(picture) = &picture else { break };
            let size = (
                source_width / lower.shape.level.size_divisor,
                source_height / lower.shape.level.size_divisor,
            );
            if let Some((level, pixels, bytes)) = lower.send(&shared, picture, size, ticks, capture_time) {
                rate.handle_frame_sent(level, pixels, bytes);
                shared.board.video_bytes_sent.fetch_add(bytes as u64, Relaxed);
            }
        }
    }
}

/// A lower layer being sent: its own stamps and encoder.
struct LowerLayerSender {
    shape: LowerLayer,
    stamper: MediaStamper,
    encoder: JpegEncoder,
    packet: Vec<u8>,
    next_at: Option<Instant>,
}

impl LowerLayerSender {
    fn new(shape: LowerLayer) -> Self {
        Self {
            shape,
            stamper: MediaStamper::new(MediaKind::Video),
            encoder: JpegEncoder::new(shape.level.quality).expect("a lower layer's quality is valid"),
            packet: Vec::new(),
            next_at: None,
        }
    }

    fn restart(&mut self) {
        self.stamper.restart();
        self.next_at = None;
    }

    /// Sends `picture` at `size` as this layer's next frame; returns, if it went, its level,
    /// pixels and bytes.
    fn send(
        &mut self,
        shared: &Shared,
        picture: &VideoFrame,
        (width, height): (u32, u32),
        ticks: u64,
        capture_time: RelayTime,
    ) -> Option<(VideoLevel, u64, usize)> {
        let scaled = scale(picture, width.max(16), height.max(16));
        if self.encoder.encode(&scaled, &mut self.packet).is_err() {
            return None;
        }
        let mut header = self.stamper.stamp(ticks, capture_time);
        header.flags = header.flags.with(self.shape.layer.flag());
        if !shared.transport.send_media(&header, &self.packet) {
            return None;
        }
        Some((self.shape.level, u64::from(scaled.width) * u64::from(scaled.height), self.packet.len()))
    }
}

fn new_rate(settings: &VideoSettings) -> VideoRate {
    let config = RateConfig { start_bps: START_BPS, ..RateConfig::default() };
    VideoRate::new(config, settings.fps, DEFAULT_JPEG_QUALITY)
}

fn open_source(input: &VideoInput, settings: &VideoSettings) -> Result<Box<dyn VideoSource>, String> {
    match input {
        VideoInput::None => Err("no video input".into()),
        VideoInput::Pattern => {
            Ok(Box::new(TestPatternSource::new(settings.width, settings.height, settings.fps)))
        }
        VideoInput::Camera(name) => {
            CameraSource::open(name.as_deref(), settings.width, settings.height, settings.fps)
                .map(|camera| Box::new(camera) as Box<dyn VideoSource>)
                .map_err(|error| error.to_string())
        }
        VideoInput::Clip(path) => ClipSource::open(path, settings.width, settings.height, settings.fps)
            .map(|clip| Box::new(clip) as Box<dyn VideoSource>)
            .map_err(|error| error.to_string()),
    }
}

/// The decode worker: one thread for every peer's video, fed straight by the connection.
pub(crate) fn run_decode(shared: Arc<Shared>, stop: Receiver<()>, record_dir: Option<PathBuf>) {
    let frames = shared.transport.video().clone();
    let mut decoder = JpegDecoder::default();
    let mut part = VideoPart::default();
    // The last JPEG received from each peer, as received, for `--record`.
    let mut last_jpegs: HashMap<ParticipantId, Bytes> = HashMap::new();
    // When each peer's last frame of each layer arrived: a layer is shown only while no larger
    // one comes.
    let mut last_layers: HashMap<ParticipantId, LayerTimes> = HashMap::new();
    let mut published = Instant::now();
    loop {
        select! {
            recv(stop) -> _ => break,
            recv(frames) -> received => match received {
                Ok(received) => {
                    if shows_layer(&mut last_layers, &received, Instant::now()) {
                        decode(&shared, &mut decoder, &mut part, &mut last_jpegs, received);
                    }
                }
                Err(_) => break,
            },
            default(PUBLISH_EVERY) => {}
        }
        if published.elapsed() >= PUBLISH_EVERY {
            published = Instant::now();
            shared.board.publish_video(&part);
        }
    }
    shared.board.publish_video(&part);
    if let Some(dir) = record_dir {
        write_last_frames(&shared, &dir, &last_jpegs);
    }
}

/// When a peer's last frame of each layer arrived.
type LayerTimes = [Option<Instant>; VideoLayer::ALL.len()];

/// Whether `received` is of the layer to show: the largest layer of its peer's that has come
/// within [`LARGER_LAYER_HOLD`] (a relay that forwards several layers).
fn shows_layer(
    last_layers: &mut HashMap<ParticipantId, LayerTimes>,
    received: &ReceivedMedia,
    now: Instant,
) -> bool {
    let layer = received.header.flags.layer();
    let times = last_layers.entry(received.header.sender).or_default();
    times[layer.index()] = Some(now);
    times[..layer.index()].iter().flatten().all(|at| now.saturating_duration_since(*at) >= LARGER_LAYER_HOLD)
}

fn decode(
    shared: &Shared,
    decoder: &mut JpegDecoder,
    part: &mut VideoPart,
    last_jpegs: &mut HashMap<ParticipantId, Bytes>,
    received: ReceivedMedia,
) {
    let sender = received.header.sender;
    let decoded = decoder.decode(&received.payload);
    let now = Instant::now();
    let stats = part.peers.entry(sender).or_default();
    stats.bytes += received.payload.len() as u64;
    let frame = match decoded {
        Ok(frame) => frame,
        Err(error) => {
            // A bad frame from a peer costs that frame, never the call.
            stats.decode_errors += 1;
            tracing::debug!(%error, peer = %sender, "dropped a video frame");
            return;
        }
    };
    stats.frames += 1;
    stats.first_at.get_or_insert(now);
    stats.last_at = Some(now);
    (stats.width, stats.height) = (frame.width, frame.height);
    let glass_to_glass = shared
        .transport
        .relay_time(now)
        .map(|relay_now| relay_now.saturating_since(received.header.capture_time));
    if let Some(delay) = glass_to_glass {
        stats.glass_to_glass.record(delay);
    }
    last_jpegs.insert(sender, received.payload);
    let audio_delay = shared.board.mouth_to_ear(sender);
    lock(&shared.video.peers).entry(sender).or_default().handle_frame(
        now,
        Arc::new(frame),
        glass_to_glass,
        audio_delay,
    );
}

/// Writes `<dir>/<peer name>.jpg` for every peer that sent video: the last frame received.
fn write_last_frames(shared: &Shared, dir: &std::path::Path, last_jpegs: &HashMap<ParticipantId, Bytes>) {
    for (peer, jpeg) in last_jpegs {
        let name = shared.board.name(*peer).unwrap_or_else(|| peer.to_string());
        let path = dir.join(format!("{}.jpg", file_name(&name)));
        if let Err(error) = std::fs::write(&path, jpeg) {
            warn!(%error, path = %path.display(), "cannot write the last video frame");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chinwag_proto::{MediaFlags, MediaHeader, MediaTimestamp, SeqNo};

    fn frame_of(sender: u32, layer: VideoLayer) -> ReceivedMedia {
        ReceivedMedia {
            header: MediaHeader {
                kind: MediaKind::Video,
                flags: MediaFlags::default().with(layer.flag()),
                sender: ParticipantId(sender),
                seq: SeqNo(0),
                timestamp: MediaTimestamp(0),
                capture_time: RelayTime::from_micros(0),
            },
            payload: Bytes::new(),
            arrived: Instant::now(),
        }
    }

    #[test]
    fn of_several_layers_only_the_largest_arriving_is_shown() {
        let start = Instant::now();
        let mut last = HashMap::new();
        let ms = Duration::from_millis(1);
        // A peer's small layer alone is shown; then its middle one arrives and takes over.
        assert!(shows_layer(&mut last, &frame_of(1, VideoLayer::Small), start));
        assert!(shows_layer(&mut last, &frame_of(1, VideoLayer::Middle), start + 50 * ms));
        assert!(!shows_layer(&mut last, &frame_of(1, VideoLayer::Small), start + 100 * ms));
        // Another peer's layers are its own.
        assert!(shows_layer(&mut last, &frame_of(2, VideoLayer::Small), start + 100 * ms));
        // The full layer beats both; once it stops, the middle one is shown again.
        assert!(shows_layer(&mut last, &frame_of(1, VideoLayer::Full), start + 150 * ms));
        assert!(!shows_layer(&mut last, &frame_of(1, VideoLayer::Middle), start + 200 * ms));
        let later = start + 150 * ms + LARGER_LAYER_HOLD;
        assert!(shows_layer(&mut last, &frame_of(1, VideoLayer::Middle), later));
        assert!(!shows_layer(&mut last, &frame_of(1, VideoLayer::Small), later));
    }
}
