//! One outgoing media stream's numbering: sequence numbers, media timestamps and the restart
//! flag, the same for audio and video.

use chinwag_proto::{MediaFlags, MediaHeader, MediaKind, MediaTimestamp, ParticipantId, RelayTime, SeqNo};

/// Stamps each frame of one outgoing stream with its header.
///
/// The first frame, and the first after [`MediaStamper::restart`], carries the restart flag
/// so that receivers reset their buffers rather than wait for a continuation.
#[derive(Debug, Clone)]
pub struct MediaStamper {
    kind: MediaKind,
    seq: SeqNo,
    restart_pending: bool,
}

impl MediaStamper {
    pub fn new(kind: MediaKind) -> Self {
        Self { kind, seq: SeqNo(0), restart_pending: true }
    }

    /// The header for the next frame: `media_ticks` is its position in the stream, in the
    /// kind's clock rate (48 kHz samples for audio, 90 kHz for video; it wraps on the wire),
    /// and `capture_time` when its first sample or picture was captured, on the relay clock.
    pub fn stamp(&mut self, media_ticks: u64, capture_time: RelayTime) -> MediaHeader {
        let mut flags = MediaFlags::default();
        if std::mem::take(&mut self.restart_pending) {
            flags = flags.with(MediaFlags::RESTART);
        }
        let header = MediaHeader {
            kind: self.kind,
            flags,
            // The relay writes the real sender.
            sender: ParticipantId(0),
            seq: self.seq,
            timestamp: MediaTimestamp(media_ticks as u32),
            capture_time,
        };
        self.seq = self.seq.next();
        header
    }

    /// The next frame starts a new stream: the source changed and its media time starts over.
    pub fn restart(&mut self) {
        self.restart_pending = true;
    }

    pub fn kind(&self) -> MediaKind {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_frames_in_order_and_flags_only_stream_starts() {
        let mut stamper = MediaStamper::new(MediaKind::Video);
        let at = RelayTime::from_micros(5);
        let first = stamper.stamp(0, at);
        let second = stamper.stamp(3000, at);
        assert_eq!((first.seq, second.seq), (SeqNo(0), SeqNo(1)));
        assert!(first.flags.contains(MediaFlags::RESTART));
        assert!(!second.flags.contains(MediaFlags::RESTART));
        assert_eq!(
            (second.kind, second.timestamp, second.capture_time),
            (MediaKind::Video, MediaTimestamp(3000), at)
        );
        stamper.restart();
        let third = stamper.stamp(0, at);
        assert!(third.flags.contains(MediaFlags::RESTART));
        assert_eq!(third.seq, SeqNo(2), "sequence numbers go on across a restart");
    }

    #[test]
    fn media_time_wraps_on_the_wire() {
        let mut stamper = MediaStamper::new(MediaKind::Audio);
        let header = stamper.stamp(u64::from(u32::MAX) + 961, RelayTime::from_micros(0));
        assert_eq!(header.timestamp, MediaTimestamp(960));
    }
}
