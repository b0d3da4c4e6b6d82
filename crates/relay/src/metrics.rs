//! Counters the relay keeps, rendered in the Prometheus text format for `GET /metrics`.
//!
//! Hand-written over atomics rather than through a metrics crate: the set is small and fixed,
//! and the hot path is one relaxed atomic add.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use chinwag_proto::{ErrorCode, MediaKind};

/// Why a media frame or message was dropped instead of delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A binary frame with a bad version, kind or length.
    BadHeader,
    /// An older video frame replaced by a newer one from the same sender before it went out.
    VideoSuperseded,
    /// A video frame that did not fit the receiver's video budget.
    VideoQueueFull,
    /// A frame larger than the relay's limit for its kind (dropped as it arrives, once) or
    /// than a receiver's whole budget for its kind.
    FrameTooLarge,
    /// Audio dropped, oldest first, to keep a receiver's queue within its byte budget.
    AudioQueueFull,
    /// Frames thrown away with the queue of a receiver disconnected for being too slow.
    ReceiverTooSlow,
    /// Frames thrown away with the queue of a receiver closed for another reason (it broke a
    /// limit, or the relay is shutting down).
    ReceiverClosed,
}

impl DropReason {
    const ALL: [DropReason; 7] = [
        DropReason::BadHeader,
        DropReason::VideoSuperseded,
        DropReason::VideoQueueFull,
        DropReason::FrameTooLarge,
        DropReason::AudioQueueFull,
        DropReason::ReceiverTooSlow,
        DropReason::ReceiverClosed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DropReason::BadHeader => "bad_header",
            DropReason::VideoSuperseded => "video_superseded",
            DropReason::VideoQueueFull => "video_queue_full",
            DropReason::FrameTooLarge => "frame_too_large",
            DropReason::AudioQueueFull => "audio_queue_full",
            DropReason::ReceiverTooSlow => "receiver_too_slow",
            DropReason::ReceiverClosed => "receiver_closed",
        }
    }
}

/// Why a new connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedReason {
    /// Its source holds as many connections as it may.
    SourceConnections,
    /// Its source holds as many connections that have not joined yet as it may.
    SourceHandshakes,
    /// The relay holds as many connections as it may (answered only for `/healthz` and
    /// `/metrics`).
    RelayFull,
    /// A web page from an origin the relay does not allow asked for a WebSocket.
    Origin,
}

impl RefusedReason {
    const ALL: [RefusedReason; 4] = [
        RefusedReason::SourceConnections,
        RefusedReason::SourceHandshakes,
        RefusedReason::RelayFull,
        RefusedReason::Origin,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RefusedReason::SourceConnections => "source_connections",
            RefusedReason::SourceHandshakes => "source_handshakes",
            RefusedReason::RelayFull => "relay_full",
            RefusedReason::Origin => "origin",
        }
    }
}

/// Writes one metric in the Prometheus text format, named `chinwag_{name}`.
pub(crate) fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP chinwag_{name} {help}\n# TYPE chinwag_{name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "chinwag_{name}{labels} {value}");
    }
}

/// One sample per media kind, labelled `kind`.
pub(crate) fn by_kind(values: &[AtomicU64; 2]) -> Vec<(String, u64)> {
    [MediaKind::Audio, MediaKind::Video]
        .iter()
        .map(|kind| (format!("{{kind=\"{}\"}}", kind.as_str()), values[kind_index(*kind)].load(Relaxed)))
        .collect()
}

/// The error codes the relay sends, in the order they are reported.
const SENT_CODES: [ErrorCode; 13] = [
    ErrorCode::BadRequest,
    ErrorCode::UnsupportedVersion,
    ErrorCode::WrongPassword,
    ErrorCode::RoomFull,
    ErrorCode::ServerFull,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::Timeout,
    ErrorCode::TooSlow,
    ErrorCode::ShuttingDown,
    ErrorCode::Unavailable,
    ErrorCode::Replaced,
    ErrorCode::Unauthorized,
];

#[derive(Debug, Default)]
pub struct Metrics {
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: [AtomicU64; RefusedReason::ALL.len()],
    frames_in: [AtomicU64; 2],
    bytes_in: [AtomicU64; 2],
    frames_out: [AtomicU64; 2],
    bytes_out: [AtomicU64; 2],
    drops: [AtomicU64; DropReason::ALL.len()],
    errors: [AtomicU64; SENT_CODES.len()],
}

/// Values read at scrape time from the rooms and the queues.
#[derive(Debug, Default)]
pub struct Gauges {
    pub rooms: usize,
    pub participants: usize,
    pub queued_audio_frames: usize,
    pub queued_video_frames: usize,
    pub queued_bytes: usize,
    pub largest_queue_bytes: usize,
}

pub(crate) fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

impl Metrics {
    pub fn connection_opened(&self) {
        self.connections_accepted.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
    }

    pub fn connection_refused(&self, reason: RefusedReason) {
        let index = RefusedReason::ALL.iter().position(|r| *r == reason).expect("ALL lists every reason");
        self.connections_refused[index].fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    pub fn open_connections(&self) -> u64 {
        self.connections_open.load(Relaxed)
    }

    pub fn received(&self, kind: MediaKind, bytes: usize) {
        self.frames_in[kind_index(kind)].fetch_add(1, Relaxed);
        self.bytes_in[kind_index(kind)].fetch_add(bytes as u64, Relaxed);
    }

    pub fn sent(&self, kind: MediaKind, bytes: usize) {
        self.frames_out[kind_index(kind)].fetch_add(1, Relaxed);
        self.bytes_out[kind_index(kind)].fetch_add(bytes as u64, Relaxed);
    }

    pub fn dropped(&self, reason: DropReason, frames: usize) {
        let index = DropReason::ALL.iter().position(|r| *r == reason).expect("ALL lists every reason");
        self.drops[index].fetch_add(frames as u64, Relaxed);
    }

    pub fn error_sent(&self, code: ErrorCode) {
        if let Some(index) = SENT_CODES.iter().position(|c| *c == code) {
            self.errors[index].fetch_add(1, Relaxed);
        }
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            write_metric(&mut out, name, kind, help, samples);
        };
        let plain = |value: u64| vec![(String::new(), value)];
        metric("connections", "gauge", "Open connections, joined or not.", &plain(self.open_connections()));
        metric(
            "connections_accepted_total",
            "counter",
            "Connections accepted since start.",
            &plain(self.connections_accepted.load(Relaxed)),
        );
        let refused: Vec<_> = RefusedReason::ALL
            .iter()
            .zip(&self.connections_refused)
            .map(|(reason, value)| (format!("{{reason=\"{}\"}}", reason.as_str()), value.load(Relaxed)))
            .collect();
        metric("connections_refused_total", "counter", "Connections turned away, by reason.", &refused);
        metric("rooms", "gauge", "Rooms with at least one participant.", &plain(gauges.rooms as u64));
        metric("participants", "gauge", "Joined participants.", &plain(gauges.participants as u64));
        metric(
            "frames_in_total",
            "counter",
            "Media frames received from clients.",
            &by_kind(&self.frames_in),
        );
        metric("bytes_in_total", "counter", "Media bytes received from clients.", &by_kind(&self.bytes_in));
        metric(
            "frames_out_total",
            "counter",
            "Media frames written to receivers.",
            &by_kind(&self.frames_out),
        );
        metric("bytes_out_total", "counter", "Media bytes written to receivers.", &by_kind(&self.bytes_out));
        let drops: Vec<_> = DropReason::ALL
            .iter()
            .zip(&self.drops)
            .map(|(reason, value)| (format!("{{reason=\"{}\"}}", reason.as_str()), value.load(Relaxed)))
            .collect();
        metric("dropped_frames_total", "counter", "Media frames not delivered, by reason.", &drops);
        let errors: Vec<_> = SENT_CODES
            .iter()
            .zip(&self.errors)
            .map(|(code, value)| (format!("{{code=\"{code}\"}}"), value.load(Relaxed)))
            .collect();
        metric("errors_sent_total", "counter", "Error messages sent to clients, by code.", &errors);
        metric(
            "queued_frames",
            "gauge",
            "Media frames waiting in receivers' queues.",
            &[
                ("{kind=\"audio\"}".to_owned(), gauges.queued_audio_frames as u64),
                ("{kind=\"video\"}".to_owned(), gauges.queued_video_frames as u64),
            ],
        );
        metric(
            "queued_bytes",
            "gauge",
            "Bytes waiting in all receivers' queues.",
            &plain(gauges.queued_bytes as u64),
        );
        metric(
            "largest_queue_bytes",
            "gauge",
            "Bytes waiting in the fullest receiver's queue.",
            &plain(gauges.largest_queue_bytes as u64),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.received(MediaKind::Video, 1000);
        metrics.dropped(DropReason::VideoSuperseded, 3);
        metrics.error_sent(ErrorCode::RoomFull);
        let text = metrics.render(&Gauges { rooms: 2, ..Gauges::default() });
        assert!(text.contains("# TYPE chinwag_rooms gauge\nchinwag_rooms 2\n"), "{text}");
        assert!(text.contains("chinwag_bytes_in_total{kind=\"video\"} 1000\n"));
        assert!(text.contains("chinwag_frames_in_total{kind=\"audio\"} 0\n"));
        assert!(text.contains("chinwag_dropped_frames_total{reason=\"video_superseded\"} 3\n"));
        assert!(text.contains("chinwag_errors_sent_total{code=\"room_full\"} 1\n"));
    }
}
