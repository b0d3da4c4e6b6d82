//! Video: the send thread (source → adaptation → JPEG → transport) and the decode worker
//! (received JPEG → newest RGBA frame per peer, released no earlier than the audio captured
//! with it is heard).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chinwag_capture::{CameraSource, FrameContent, TestPatternSource, VideoSource};
use chinwag_codec::{DEFAULT_JPEG_QUALITY, JpegDecoder, JpegEncoder, VideoFrame, scale};
use chinwag_proto::{MediaFlags, MediaHeader, MediaKind, MediaTimestamp, ParticipantId, RelayTime, SeqNo};
use crossbeam_channel::{Receiver, Sender};
use tracing::warn;

use crate::adapt::VideoAdapter;
use crate::{CallEvent, Shared, lock};

/// Where the call's outgoing video comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoInput {
    /// Send no video.
    None,
    /// The synthetic test pattern (colour bars, a moving box, a frame counter).
    Pattern,
    /// A camera: `None` for the first one.
    Camera(Option<String>),
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

/// A received frame waiting to be shown.
struct Pending {
    show_at: Instant,
    frame: Arc<VideoFrame>,
}

/// What the decode worker keeps per peer.
#[derive(Default)]
pub(crate) struct PeerVideo {
    pub(crate) name: String,
    pending: VecDeque<Pending>,
    shown: Option<Arc<VideoFrame>>,
    /// The last JPEG received, as received, for `--record`.
    pub(crate) last_jpeg: Option<Bytes>,
}

impl PeerVideo {
    /// The newest frame whose time has come.
    fn current(&mut self, now: Instant) -> Option<Arc<VideoFrame>> {
        while self.pending.front().is_some_and(|pending| pending.show_at <= now) {
            self.shown = self.pending.pop_front().map(|pending| pending.frame);
        }
        self.shown.clone()
    }
}

/// Frames waiting for the decode worker; beyond this, older ones are dropped.
const DECODE_BACKLOG: usize = 8;
/// Frames waiting to be shown per peer (lip sync holds them back by the audio delay).
const PENDING_KEPT: usize = 8;

/// A frame for the decode worker.
pub(crate) struct Received {
    pub(crate) sender: ParticipantId,
    pub(crate) name: String,
    pub(crate) capture_time: RelayTime,
    pub(crate) payload: Bytes,
}

pub(crate) fn decode_channel() -> (Sender<Received>, Receiver<Received>) {
    crossbeam_channel::bounded(DECODE_BACKLOG)
}

/// The send thread for video.
pub(crate) fn run_send(
    settings: VideoSettings,
    shared: Arc<Shared>,
    commands: Receiver<VideoInput>,
    events: Sender<CallEvent>,
) {
    let mut input = settings.input.clone();
    let mut source: Option<Box<dyn VideoSource>> = None;
    let mut encoder = JpegEncoder::new(DEFAULT_JPEG_QUALITY).expect("the default quality is valid");
    let mut decoder = JpegDecoder::default();
    let mut adapter = VideoAdapter::new(DEFAULT_JPEG_QUALITY);
    let mut packet = Vec::new();
    let mut seq = SeqNo(0);
    let mut first_capture: Option<Instant> = None;
    let mut frame_idx = 0u64;
    loop {
        match commands.try_recv() {
            Ok(new_input) => {
                input = new_input;
                source = None;
                first_capture = None;
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => return,
            Err(crossbeam_channel::TryRecvError::Empty) => {}
        }
        if input == VideoInput::None || !shared.transport.is_connected() {
            shared.set_camera(false);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if source.is_none() {
            match open_source(&input, &settings) {
                Ok(opened) => {
                    source = Some(opened);
                    shared.set_camera(true);
                }
                Err(error) => {
                    let _ = events.send(CallEvent::DeviceProblem { error, fallback: "no video".into() });
                    input = VideoInput::None;
                    continue;
                }
            }
        }
        let Some(video) = source.as_mut() else { continue };
        let captured = match video.next_frame() {
            Ok(captured) => captured,
            Err(error) => {
                let _ = events
                    .send(CallEvent::DeviceProblem { error: error.to_string(), fallback: "no video".into() });
                input = VideoInput::None;
                source = None;
                continue;
            }
        };
        let now = Instant::now();
        let level =
            adapter.handle_send_state(now, shared.transport.stats().video_replaced, shared.transport.rtt());
        frame_idx += 1;
        if !frame_idx.is_multiple_of(u64::from(level.fps_divisor)) {
            continue;
        }
        let raw = match (captured.content, level) {
            // The camera's own JPEG goes out as it is while nothing needs changing.
            (FrameContent::Jpeg { data, .. }, level)
                if level.size_divisor == 1 && level.quality == DEFAULT_JPEG_QUALITY =>
            {
                packet = data;
                None
            }
            (FrameContent::Jpeg { data, .. }, _) => match decoder.decode(&data) {
                Ok(frame) => Some(frame),
                Err(error) => {
                    warn!(%error, "the camera sent a frame that does not decode");
                    continue;
                }
            },
            (FrameContent::Rgba(frame), _) => Some(frame),
        };
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
            let _ = encoder.set_quality(level.quality);
            if let Err(error) = encoder.encode(&frame, &mut packet) {
                warn!(%error, "could not encode a video frame");
                continue;
            }
            *lock(&shared.preview) = Some(Arc::new(frame));
        }
        let Some(capture_time) = shared.transport.relay_time(captured.captured_at) else { continue };
        let first = *first_capture.get_or_insert(captured.captured_at);
        let ticks = captured.captured_at.saturating_duration_since(first).as_micros() * 90 / 1000;
        let header = MediaHeader {
            kind: MediaKind::Video,
            flags: if seq.0 == 0 {
                MediaFlags::default().with(MediaFlags::RESTART)
            } else {
                MediaFlags::default()
            },
            sender: ParticipantId(0),
            seq,
            timestamp: MediaTimestamp(ticks as u32),
            capture_time,
        };
        shared.transport.send_media(&header, &packet);
        seq = seq.next();
        let mut stats = lock(&shared.stats);
        stats.video_frames_sent += 1;
        stats.video_bytes_sent += packet.len() as u64;
    }
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
    }
}

/// The decode worker: one thread for every peer's video.
pub(crate) fn run_decode(shared: Arc<Shared>, frames: Receiver<Received>) {
    let mut decoder = JpegDecoder::default();
    for received in frames {
        let decoded = decoder.decode(&received.payload);
        let now = Instant::now();
        let mut stats = lock(&shared.stats);
        let Some(peer) = stats.peer_mut(received.sender) else { continue };
        peer.video_bytes_received += received.payload.len() as u64;
        let frame = match decoded {
            Ok(frame) => frame,
            Err(error) => {
                // A bad frame from a peer costs that frame, never the call.
                peer.video_decode_errors += 1;
                tracing::debug!(%error, peer = %received.sender, "dropped a video frame");
                continue;
            }
        };
        peer.video_frames_received += 1;
        peer.video_first_at.get_or_insert(now);
        peer.video_last_at = Some(now);
        (peer.video_width, peer.video_height) = (frame.width, frame.height);
        let glass_to_glass = shared
            .transport
            .relay_time(now)
            .map(|relay_now| relay_now.saturating_since(received.capture_time));
        if let Some(delay) = glass_to_glass {
            peer.glass_to_glass_ms.push(delay.as_secs_f32() * 1000.0);
        }
        // Lip sync: hold the frame until the audio captured with it is heard.
        let audio_delay = peer.mouth_to_ear_ms.last().map(|ms| Duration::from_secs_f32(ms.max(0.0) / 1000.0));
        let hold = match (audio_delay, glass_to_glass) {
            (Some(audio), Some(video)) => audio.saturating_sub(video),
            _ => Duration::ZERO,
        };
        drop(stats);
        let mut videos = lock(&shared.video);
        let peer_video = videos.entry(received.sender).or_default();
        peer_video.name = received.name;
        peer_video.last_jpeg = Some(received.payload);
        if peer_video.pending.len() == PENDING_KEPT {
            let _shown_late_because_audio_is_far_behind = peer_video.pending.pop_front();
        }
        peer_video.pending.push_back(Pending { show_at: now + hold, frame: Arc::new(frame) });
    }
}

/// The newest frame of `peer` that is due now.
pub(crate) fn current_frame(shared: &Shared, peer: ParticipantId) -> Option<Arc<VideoFrame>> {
    lock(&shared.video).get_mut(&peer).and_then(|video| video.current(Instant::now()))
}

/// Writes `<dir>/<peer name>.jpg` for every peer that sent video: the last frame received.
pub(crate) fn write_last_frames(shared: &Shared, dir: &std::path::Path) {
    for video in lock(&shared.video).values() {
        if let Some(jpeg) = &video.last_jpeg {
            let path = dir.join(format!("{}.jpg", crate::file_name(&video.name)));
            if let Err(error) = std::fs::write(&path, jpeg) {
                warn!(%error, path = %path.display(), "cannot write the last video frame");
            }
        }
    }
}
