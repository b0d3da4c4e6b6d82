//! The binary media frame: a 24-byte big-endian header followed by the payload.
//!
//! ```text
//! byte  0      version (1)
//! byte  1      kind (1 audio, 2 video)
//! byte  2      flags
//! byte  3      reserved (0 when sent, ignored when read)
//! bytes 4..8   sender id (written by the relay)
//! bytes 8..12  sequence number, per sender and kind, wrapping
//! bytes 12..16 media timestamp (48 kHz ticks for audio, 90 kHz for video), wrapping
//! bytes 16..24 capture time, microseconds of the relay clock as the sender estimates it
//! ```

use crate::{PROTOCOL_VERSION, ParticipantId, ProtoError, RelayTime};

/// Length of the fixed media header in bytes.
pub const HEADER_LEN: usize = 24;

/// What a media frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// One Opus packet.
    Audio,
    /// One JPEG image.
    Video,
}

impl MediaKind {
    pub const fn to_byte(self) -> u8 {
        match self {
            MediaKind::Audio => 1,
            MediaKind::Video => 2,
        }
    }

    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(MediaKind::Audio),
            2 => Some(MediaKind::Video),
            _ => None,
        }
    }

    /// Ticks per second of the media timestamp for this kind.
    pub const fn clock_rate(self) -> u32 {
        match self {
            MediaKind::Audio => 48_000,
            MediaKind::Video => 90_000,
        }
    }

    /// The lower-case name used in metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// The flags byte. Unknown bits are carried through untouched and ignored by receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MediaFlags(pub u8);

impl MediaFlags {
    /// The sender (re)started this stream: sequence numbers and timestamps start afresh, and a
    /// receiver should reset its state for this sender rather than wait for the old sequence.
    pub const RESTART: u8 = 0x01;
    /// A video frame of the sender's small layer: the same picture as its full frames, much
    /// smaller, for receivers whose downlink cannot carry the full ones without delaying their
    /// voice. The relay forwards one layer to each receiver; a receiver that gets both (from
    /// a relay that does not choose) shows the full one.
    pub const SMALL: u8 = 0x02;
    /// A video frame of the sender's middle layer: the same picture at half the width and
    /// height, for receivers whose downlink carries more than the small layer but not the
    /// full one. Like `SMALL`, the relay forwards one layer to each receiver.
    pub const MIDDLE: u8 = 0x04;

    pub const fn contains(self, bit: u8) -> bool {
        self.0 & bit == bit
    }

    pub const fn with(self, bit: u8) -> Self {
        Self(self.0 | bit)
    }

    /// The video layer a frame with these flags belongs to (`small` wins over `middle`).
    pub const fn layer(self) -> VideoLayer {
        if self.contains(Self::SMALL) {
            VideoLayer::Small
        } else if self.contains(Self::MIDDLE) {
            VideoLayer::Middle
        } else {
            VideoLayer::Full
        }
    }
}

/// One of the pictures a video sender sends of the same moment, largest first: its full
/// frames, and beside them (while the full ones are larger) a middle and a small layer for
/// receivers on slower downlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VideoLayer {
    Full,
    /// Half the full layer's width and height.
    Middle,
    /// A quarter of the full layer's width and height.
    Small,
}

impl VideoLayer {
    /// Every layer, largest first.
    pub const ALL: [VideoLayer; 3] = [VideoLayer::Full, VideoLayer::Middle, VideoLayer::Small];

    /// The flag bit that marks a frame of this layer (none for the full layer).
    pub const fn flag(self) -> u8 {
        match self {
            VideoLayer::Full => 0,
            VideoLayer::Middle => MediaFlags::MIDDLE,
            VideoLayer::Small => MediaFlags::SMALL,
        }
    }

    /// The layer's place in [`VideoLayer::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A per-sender, per-kind sequence number that wraps at `u32::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNo(pub u32);

impl SeqNo {
    pub const fn next(self) -> Self {
        Self(self.0.wrapping_add(1))
    }

    /// Signed distance from `earlier` to `self`, treating the space as circular: positive when
    /// `self` comes after `earlier` by less than half the space.
    pub const fn distance_from(self, earlier: SeqNo) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }
}

/// A media timestamp in ticks of the kind's clock rate ([`MediaKind::clock_rate`]), wrapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MediaTimestamp(pub u32);

impl MediaTimestamp {
    /// Signed tick distance from `earlier` to `self`, circular like [`SeqNo::distance_from`].
    pub const fn ticks_since(self, earlier: MediaTimestamp) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }

    pub const fn add_ticks(self, ticks: u32) -> Self {
        Self(self.0.wrapping_add(ticks))
    }
}

/// The decoded fixed header of a media frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaHeader {
    pub kind: MediaKind,
    pub flags: MediaFlags,
    pub sender: ParticipantId,
    pub seq: SeqNo,
    pub timestamp: MediaTimestamp,
    pub capture_time: RelayTime,
}

impl MediaHeader {
    /// Splits a binary frame into its header and payload, checking version and kind.
    pub fn decode(frame: &[u8]) -> Result<(MediaHeader, &[u8]), ProtoError> {
        let Some((head, payload)) = frame.split_first_chunk::<HEADER_LEN>() else {
            return Err(ProtoError::Truncated { len: frame.len() });
        };
        if head[0] != PROTOCOL_VERSION {
            return Err(ProtoError::BadMediaVersion(head[0]));
        }
        let kind = MediaKind::from_byte(head[1]).ok_or(ProtoError::BadMediaKind(head[1]))?;
        let word = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let mut capture = [0u8; 8];
        capture.copy_from_slice(&head[16..24]);
        let header = MediaHeader {
            kind,
            flags: MediaFlags(head[2]),
            sender: ParticipantId(word(4)),
            seq: SeqNo(word(8)),
            timestamp: MediaTimestamp(word(12)),
            capture_time: RelayTime::from_micros(u64::from_be_bytes(capture)),
        };
        Ok((header, payload))
    }

    /// The 24 header bytes for this header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut head = [0u8; HEADER_LEN];
        head[0] = PROTOCOL_VERSION;
        head[1] = self.kind.to_byte();
        head[2] = self.flags.0;
        head[3] = 0;
        head[4..8].copy_from_slice(&self.sender.0.to_be_bytes());
        head[8..12].copy_from_slice(&self.seq.0.to_be_bytes());
        head[12..16].copy_from_slice(&self.timestamp.0.to_be_bytes());
        head[16..24].copy_from_slice(&self.capture_time.as_micros().to_be_bytes());
        head
    }
}

/// A complete binary frame: `header` followed by `payload`.
pub fn encode_frame(header: &MediaHeader, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&header.encode());
    frame.extend_from_slice(payload);
    frame
}

/// Overwrites the sender id of a frame in place, as the relay does with every frame it
/// forwards, after checking that the frame has a valid header. Returns the header as
/// rewritten.
pub fn rewrite_sender_id(frame: &mut [u8], sender: ParticipantId) -> Result<MediaHeader, ProtoError> {
    let (mut header, _) = MediaHeader::decode(frame)?;
    frame[4..8].copy_from_slice(&sender.0.to_be_bytes());
    header.sender = sender;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> MediaHeader {
        MediaHeader {
            kind: MediaKind::Audio,
            flags: MediaFlags::default().with(MediaFlags::RESTART),
            sender: ParticipantId(0x0102_0304),
            seq: SeqNo(0x0506_0708),
            timestamp: MediaTimestamp(0x090a_0b0c),
            capture_time: RelayTime::from_micros(0x0d0e_0f10_1112_1314),
        }
    }

    #[test]
    fn each_layer_is_read_back_from_its_flag() {
        for layer in VideoLayer::ALL {
            let flags = MediaFlags::default().with(MediaFlags::RESTART).with(layer.flag());
            assert_eq!(flags.layer(), layer);
            assert_eq!(VideoLayer::ALL[layer.index()], layer);
        }
    }

    #[test]
    fn header_layout_is_big_endian_as_documented() {
        let bytes = header().encode();
        assert_eq!(
            bytes,
            [1, 1, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
        );
    }

    #[test]
    fn frame_round_trips() {
        let frame = encode_frame(&header(), b"opus");
        let (decoded, payload) = MediaHeader::decode(&frame).unwrap();
        assert_eq!(decoded, header());
        assert_eq!(payload, b"opus");
    }

    #[test]
    fn bad_version_kind_and_length_are_errors() {
        let mut frame = encode_frame(&header(), b"x");
        assert!(matches!(MediaHeader::decode(&frame[..23]), Err(ProtoError::Truncated { len: 23 })));
        frame[1] = 3;
        assert!(matches!(MediaHeader::decode(&frame), Err(ProtoError::BadMediaKind(3))));
        frame[0] = 2;
        assert!(matches!(MediaHeader::decode(&frame), Err(ProtoError::BadMediaVersion(2))));
    }

    #[test]
    fn rewrite_replaces_only_the_sender() {
        let mut frame = encode_frame(&header(), b"payload");
        let rewritten = rewrite_sender_id(&mut frame, ParticipantId(7)).unwrap();
        let (decoded, payload) = MediaHeader::decode(&frame).unwrap();
        assert_eq!(decoded, MediaHeader { sender: ParticipantId(7), ..header() });
        assert_eq!(rewritten, decoded);
        assert_eq!(payload, b"payload");
    }

    #[test]
    fn sequence_distance_wraps() {
        assert_eq!(SeqNo(1).distance_from(SeqNo(u32::MAX)), 2);
        assert_eq!(SeqNo(u32::MAX).distance_from(SeqNo(1)), -2);
        assert_eq!(SeqNo(u32::MAX).next(), SeqNo(0));
        assert_eq!(MediaTimestamp(5).ticks_since(MediaTimestamp(u32::MAX - 4)), 10);
    }

    fn any_header() -> impl Strategy<Value = MediaHeader> {
        (any::<bool>(), any::<u8>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
            |(video, flags, sender, seq, ts, capture)| MediaHeader {
                kind: if video { MediaKind::Video } else { MediaKind::Audio },
                flags: MediaFlags(flags),
                sender: ParticipantId(sender),
                seq: SeqNo(seq),
                timestamp: MediaTimestamp(ts),
                capture_time: RelayTime::from_micros(capture),
            },
        )
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = MediaHeader::decode(&bytes);
            let mut copy = bytes.clone();
            let _ = rewrite_sender_id(&mut copy, ParticipantId(1));
        }

        #[test]
        fn encode_then_decode_is_identity(header in any_header(), payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let frame = encode_frame(&header, &payload);
            let (decoded, rest) = MediaHeader::decode(&frame).unwrap();
            prop_assert_eq!(decoded, header);
            prop_assert_eq!(rest, &payload[..]);
        }

        #[test]
        fn valid_headers_decode_and_reencode_to_the_same_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 24..48), video in any::<bool>()) {
            bytes[0] = 1;
            bytes[1] = if video { 2 } else { 1 };
            bytes[3] = 0;
            let (decoded, payload) = MediaHeader::decode(&bytes).unwrap();
            prop_assert_eq!(&decoded.encode()[..], &bytes[..24]);
            prop_assert_eq!(payload, &bytes[24..]);
        }
    }
}
