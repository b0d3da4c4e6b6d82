//! Opus voice: one encoder per sender, one decoder per remote participant.

use std::time::Duration;

use opus::{Application, Bitrate, Channels};

use crate::{CodecError, SAMPLE_RATE};

/// The longest packet Opus can produce, in samples at 48 kHz (120 ms).
const MAX_PACKET_SAMPLES: usize = 5760;
/// Bytes reserved for one encoded packet; Opus never needs more at voice bitrates.
const MAX_PACKET_BYTES: usize = 1500;

/// How far Opus's output lags its input at 48 kHz: the encoder's lookahead (2.5 ms) plus the
/// SILK/CELT analysis delay (4 ms). A receiver adds it to the delay it computes from capture
/// timestamps, since the decoded audio of a frame began that much earlier.
pub const CODEC_DELAY: Duration = Duration::from_micros(6500);

/// How much audio each packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameDuration {
    /// 10 ms: less delay, a little more overhead per second.
    Ms10,
    /// 20 ms: the usual choice for voice.
    #[default]
    Ms20,
}

impl FrameDuration {
    /// Samples per frame at 48 kHz.
    pub const fn samples(self) -> usize {
        match self {
            FrameDuration::Ms10 => 480,
            FrameDuration::Ms20 => 960,
        }
    }

    pub const fn duration(self) -> Duration {
        match self {
            FrameDuration::Ms10 => Duration::from_millis(10),
            FrameDuration::Ms20 => Duration::from_millis(20),
        }
    }

    /// 10 or 20, from the command line; anything else is `None`.
    pub fn from_millis(ms: u32) -> Option<Self> {
        match ms {
            10 => Some(FrameDuration::Ms10),
            20 => Some(FrameDuration::Ms20),
            _ => None,
        }
    }
}

/// How the encoder is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoiceConfig {
    pub frame: FrameDuration,
    /// Target bitrate in bits per second.
    pub bitrate_bps: u32,
    /// In-band forward error correction: each packet carries a coarse copy of the previous
    /// frame, which the receiver uses when that frame is missing and this one is not.
    pub fec: bool,
    /// The loss rate the encoder plans FEC for, in percent.
    pub expected_loss_percent: u8,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        // 40 kb/s with FEC planned for 2 % loss: PESQ-WB 4.05 on our test speech where 32 kb/s
        // with FEC for 10 % gave 3.81 (docs/benchmarks.md); Mumble sends 40 kb/s too. Over
        // TCP little is lost, so a heavier FEC would mostly cost quality.
        Self { frame: FrameDuration::Ms20, bitrate_bps: 40_000, fec: true, expected_loss_percent: 2 }
    }
}

/// Encodes 48 kHz mono frames to Opus packets.
pub struct VoiceEncoder {
    encoder: opus::Encoder,
    frame: FrameDuration,
}

impl VoiceEncoder {
    pub fn new(config: VoiceConfig) -> Result<Self, CodecError> {
        let mut encoder = opus::Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip)?;
        encoder.set_inband_fec(config.fec)?;
        encoder.set_packet_loss_perc(i32::from(config.expected_loss_percent.min(100)))?;
        let mut this = Self { encoder, frame: config.frame };
        this.set_bitrate(config.bitrate_bps)?;
        Ok(this)
    }

    pub fn frame(&self) -> FrameDuration {
        self.frame
    }

    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), CodecError> {
        if !(6_000..=510_000).contains(&bps) {
            return Err(CodecError::BadBitrate(bps));
        }
        self.encoder.set_bitrate(Bitrate::Bits(bps as i32))?;
        Ok(())
    }

    /// Encodes one frame of exactly [`FrameDuration::samples`] samples in -1.0..=1.0 into
    /// `packet`, replacing what it held.
    pub fn encode(&mut self, pcm: &[f32], packet: &mut Vec<u8>) -> Result<(), CodecError> {
        if pcm.len() != self.frame.samples() {
            return Err(CodecError::WrongFrameLength { expected: self.frame.samples(), got: pcm.len() });
        }
        packet.resize(MAX_PACKET_BYTES, 0);
        let len = self.encoder.encode_float(pcm, packet)?;
        packet.truncate(len);
        Ok(())
    }
}

/// Decodes one remote participant's Opus packets, and fills gaps.
pub struct VoiceDecoder {
    decoder: opus::Decoder,
    /// Room for the longest packet; decoded audio is returned as a slice of it.
    pcm: Vec<f32>,
    /// The duration of the last good packet, used to size concealment.
    last_samples: usize,
}

impl Default for VoiceDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl VoiceDecoder {
    pub fn new() -> Self {
        let decoder = opus::Decoder::new(SAMPLE_RATE, Channels::Mono)
            .expect("a mono decoder at 48 kHz is a valid Opus configuration");
        Self { decoder, pcm: vec![0.0; MAX_PACKET_SAMPLES], last_samples: FrameDuration::Ms20.samples() }
    }

    /// Decodes a packet; returns its samples (10 or 20 ms of them for Chinwag's senders, up
    /// to 120 ms for others). A malformed packet is an error and leaves the decoder usable.
    pub fn decode(&mut self, packet: &[u8]) -> Result<&[f32], CodecError> {
        if packet.is_empty() {
            return Err(CodecError::EmptyPacket);
        }
        let n = self.decoder.decode_float(packet, &mut self.pcm, false)?;
        self.last_samples = n;
        Ok(&self.pcm[..n])
    }

    /// Recovers the frame before `next_packet` from the FEC data inside `next_packet`. The
    /// caller decodes `next_packet` itself afterwards, as usual. Falls back to concealment
    /// inside Opus when the packet carries no FEC.
    pub fn decode_fec(&mut self, next_packet: &[u8], samples: usize) -> Result<&[f32], CodecError> {
        let samples = self.gap_samples(samples);
        let n = self.decoder.decode_float(next_packet, &mut self.pcm[..samples], true)?;
        Ok(&self.pcm[..n])
    }

    /// Conceals a missing frame of `samples` samples (0 means "as long as the last packet").
    pub fn conceal(&mut self, samples: usize) -> Result<&[f32], CodecError> {
        let samples = self.gap_samples(samples);
        let n = self.decoder.decode_float(&[], &mut self.pcm[..samples], false)?;
        Ok(&self.pcm[..n])
    }

    /// Forgets the stream, as after a sender restart.
    pub fn reset(&mut self) {
        let _ = self.decoder.reset_state();
    }

    /// A gap length Opus accepts: a multiple of 2.5 ms, at most 120 ms.
    fn gap_samples(&self, samples: usize) -> usize {
        let samples = if samples == 0 { self.last_samples } else { samples };
        (samples / 120 * 120).clamp(120, MAX_PACKET_SAMPLES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, hz: f32, offset: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 0.3 * (2.0 * std::f32::consts::PI * hz * (i + offset) as f32 / 48_000.0).sin())
            .collect()
    }

    fn rms(samples: &[f32]) -> f32 {
        (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
    }

    /// Encodes `frames` frames of a 440 Hz tone; returns the packets.
    fn packets(config: VoiceConfig, frames: usize) -> Vec<Vec<u8>> {
        let mut encoder = VoiceEncoder::new(config).unwrap();
        let n = config.frame.samples();
        (0..frames)
            .map(|i| {
                let mut packet = Vec::new();
                encoder.encode(&tone(n, 440.0, i * n), &mut packet).unwrap();
                packet
            })
            .collect()
    }

    #[test]
    fn a_tone_survives_encoding_at_both_frame_sizes() {
        for frame in [FrameDuration::Ms10, FrameDuration::Ms20] {
            let config = VoiceConfig { frame, ..VoiceConfig::default() };
            let mut decoder = VoiceDecoder::new();
            let mut out = Vec::new();
            for packet in packets(config, 50) {
                out.extend_from_slice(decoder.decode(&packet).unwrap());
            }
            assert_eq!(out.len(), 50 * frame.samples());
            // After the codec's start-up, the level matches the 0.3-amplitude sine (rms 0.212).
            let level = rms(&out[out.len() / 2..]);
            assert!((0.17..0.25).contains(&level), "{frame:?}: rms {level}");
        }
    }

    #[test]
    fn bitrate_is_near_the_setting() {
        let packets = packets(VoiceConfig::default(), 100);
        let bytes: usize = packets.iter().map(Vec::len).sum();
        let bps = bytes * 8 / 2;
        assert!((30_000..=50_000).contains(&bps), "{bps} b/s for 40 kb/s");
        assert!(VoiceEncoder::new(VoiceConfig { bitrate_bps: 1, ..VoiceConfig::default() }).is_err());
    }

    #[test]
    fn fec_recovers_a_missing_frame_better_than_concealment() {
        // At the default 2 % the encoder spends little on FEC; this checks the mechanism, with
        // the redundancy a lossy link would ask for.
        let config = VoiceConfig { expected_loss_percent: 10, ..VoiceConfig::default() };
        let mut encoder = VoiceEncoder::new(config).unwrap();
        let lookahead = encoder.encoder.get_lookahead().unwrap() as usize;
        // Speech-like: a tone whose pitch glides, so that concealment cannot simply repeat it.
        let signal: Vec<f32> = (0..60 * 960)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                0.3 * (2.0 * std::f32::consts::PI * (200.0 * t + 150.0 * t * t)).sin()
            })
            .collect();
        let packets: Vec<Vec<u8>> = signal
            .chunks(960)
            .map(|frame| {
                let mut packet = Vec::new();
                encoder.encode(frame, &mut packet).unwrap();
                packet
            })
            .collect();
        let mut fec = VoiceDecoder::new();
        let mut plc = VoiceDecoder::new();
        for packet in &packets[..40] {
            fec.decode(packet).unwrap();
            plc.decode(packet).unwrap();
        }
        // Frame 40 is missing; frame 41 has arrived. Output lags input by the lookahead.
        let recovered = fec.decode_fec(&packets[41], 960).unwrap().to_vec();
        let concealed = plc.conceal(960).unwrap().to_vec();
        assert_eq!((recovered.len(), concealed.len()), (960, 960));
        let reference = &signal[40 * 960 - lookahead..41 * 960 - lookahead];
        let error = |out: &[f32]| rms(&out.iter().zip(reference).map(|(a, b)| a - b).collect::<Vec<_>>());
        let (fec_error, plc_error) = (error(&recovered), error(&concealed));
        assert!(fec_error < 0.5 * rms(reference), "FEC error {fec_error}");
        assert!(fec_error < plc_error, "FEC error {fec_error} against concealment {plc_error}");
        // Both decoders carry on normally with the next packet.
        assert_eq!(fec.decode(&packets[41]).unwrap().len(), 960);
        assert_eq!(plc.decode(&packets[41]).unwrap().len(), 960);
    }

    #[test]
    fn garbage_packets_are_errors_not_panics() {
        let mut decoder = VoiceDecoder::new();
        assert!(decoder.decode(&[]).is_err());
        // A TOC byte announcing 120 ms frames, repeated beyond what is allowed.
        assert!(decoder.decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
        for seed in 0..200u32 {
            let junk: Vec<u8> =
                (0..(seed % 40 + 1)).map(|i| (seed.wrapping_mul(2654435761) >> (i % 24)) as u8).collect();
            let _ = decoder.decode(&junk);
            let _ = decoder.decode_fec(&junk, 960);
        }
        let packets = packets(VoiceConfig::default(), 3);
        assert_eq!(decoder.decode(&packets[0]).unwrap().len(), 960, "still decodes after junk");
    }

    #[test]
    fn wrong_frame_lengths_are_refused() {
        let mut encoder = VoiceEncoder::new(VoiceConfig::default()).unwrap();
        let mut packet = Vec::new();
        assert!(matches!(
            encoder.encode(&[0.0; 480], &mut packet),
            Err(CodecError::WrongFrameLength { expected: 960, got: 480 })
        ));
    }
}
