//! The sending half of a call's audio: 48 kHz frames in, stamped Opus packets out.

use chinwag_codec::{CodecError, VoiceConfig, VoiceEncoder};
use chinwag_proto::{MediaHeader, MediaKind, RelayTime};

use crate::stamp::MediaStamper;

/// Encodes and stamps one participant's voice.
pub struct VoiceSender {
    encoder: VoiceEncoder,
    stamper: MediaStamper,
    /// Samples sent so far: the next frame's media time.
    samples_sent: u64,
    packet: Vec<u8>,
}

impl VoiceSender {
    pub fn new(config: VoiceConfig) -> Result<Self, CodecError> {
        Ok(Self {
            encoder: VoiceEncoder::new(config)?,
            stamper: MediaStamper::new(MediaKind::Audio),
            samples_sent: 0,
            packet: Vec::with_capacity(1500),
        })
    }

    /// Samples per frame.
    pub fn frame_samples(&self) -> usize {
        self.encoder.frame().samples()
    }

    /// Encodes one frame whose first sample was captured at `capture_time` (relay clock);
    /// returns its header and Opus packet.
    pub fn handle_frame(
        &mut self,
        pcm: &[f32],
        capture_time: RelayTime,
    ) -> Result<(MediaHeader, &[u8]), CodecError> {
        self.encoder.encode(pcm, &mut self.packet)?;
        let header = self.stamper.stamp(self.samples_sent, capture_time);
        self.samples_sent += pcm.len() as u64;
        Ok((header, &self.packet))
    }
}

#[cfg(test)]
mod tests {
    use chinwag_codec::VoiceDecoder;
    use chinwag_proto::{MediaFlags, MediaTimestamp, SeqNo};

    use super::*;

    #[test]
    fn frames_come_out_numbered_and_decodable() {
        let mut sender = VoiceSender::new(VoiceConfig::default()).unwrap();
        assert_eq!(sender.frame_samples(), 960);
        let mut decoder = VoiceDecoder::new();
        for n in 0..3u32 {
            let pcm = vec![0.1; 960];
            let (header, packet) =
                sender.handle_frame(&pcm, RelayTime::from_micros(u64::from(n) * 20_000)).unwrap();
            assert_eq!((header.seq, header.timestamp), (SeqNo(n), MediaTimestamp(n * 960)));
            assert_eq!(header.flags.contains(MediaFlags::RESTART), n == 0);
            assert_eq!(decoder.decode(packet).unwrap().len(), 960);
        }
        assert!(
            sender.handle_frame(&[0.0; 7], RelayTime::from_micros(0)).is_err(),
            "a frame of the wrong size"
        );
    }
}
