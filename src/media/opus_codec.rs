//! Opus encoder and decoder for 48 kHz mono, with loss concealment and in-band FEC.

use bytes::Bytes;
use opus::{Application, Bitrate, Channels};

use super::{MediaError, FRAME_SAMPLES, MAX_PACKET_SAMPLES, SAMPLE_RATE};

/// Largest packet we let the encoder write. 1275 bytes is Opus' maximum for one frame;
/// the rest is headroom.
const MAX_PACKET_BYTES: usize = 1500;

/// Packet loss the encoder assumes when FEC is on. Opus only spends bits on in-band FEC
/// when it expects loss, so a non-zero hint is what makes FEC actually present.
const FEC_LOSS_HINT_PERCENT: i32 = 5;

/// Samples in 2.5 ms, the granularity of Opus frame sizes (and so of concealment).
const OPUS_GRANULE_SAMPLES: usize = 120;

/// Encoder settings. Defaults match the server's outbound voice path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusConfig {
    /// Target bitrate in bits per second.
    pub bitrate_bps: u32,
    /// Encoder complexity, 0 (fastest) to 10 (best).
    pub complexity: u8,
    /// In-band forward error correction, so the receiver can rebuild a lost packet.
    pub fec: bool,
    /// Discontinuous transmission: near-empty packets during silence.
    pub dtx: bool,
}

impl Default for OpusConfig {
    fn default() -> Self {
        Self {
            bitrate_bps: 64_000,
            complexity: 10,
            fec: true,
            dtx: false,
        }
    }
}

/// Encodes 20 ms frames of 48 kHz mono audio to Opus packets.
pub struct OpusEncoder {
    inner: opus::Encoder,
    /// Reused for every frame so encoding allocates only the returned `Bytes`.
    out: Box<[u8]>,
}

impl OpusEncoder {
    /// Creates a VOIP-mode encoder with `config` applied.
    ///
    /// # Errors
    /// [`MediaError::EncoderCreate`] or [`MediaError::EncoderConfig`] when libopus refuses
    /// the encoder or a setting (e.g. complexity above 10).
    pub fn new(config: &OpusConfig) -> Result<Self, MediaError> {
        let mut inner = opus::Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip)
            .map_err(MediaError::EncoderCreate)?;
        let cfg =
            |setting: &'static str| move |source| MediaError::EncoderConfig { setting, source };
        // libopus clamps bitrates to its own range; only the u32 -> i32 overflow is ours.
        let bitrate = i32::try_from(config.bitrate_bps).unwrap_or(i32::MAX);
        inner
            .set_bitrate(Bitrate::Bits(bitrate))
            .map_err(cfg("bitrate"))?;
        inner
            .set_complexity(i32::from(config.complexity))
            .map_err(cfg("complexity"))?;
        inner
            .set_inband_fec(config.fec)
            .map_err(cfg("inband_fec"))?;
        let loss_hint = if config.fec { FEC_LOSS_HINT_PERCENT } else { 0 };
        inner
            .set_packet_loss_perc(loss_hint)
            .map_err(cfg("packet_loss_perc"))?;
        inner.set_dtx(config.dtx).map_err(cfg("dtx"))?;
        Ok(Self {
            inner,
            out: vec![0; MAX_PACKET_BYTES].into_boxed_slice(),
        })
    }

    /// Encodes one frame of exactly [`FRAME_SAMPLES`] samples.
    ///
    /// With DTX on, packets of 2 bytes or less mean silence and need not be sent.
    ///
    /// # Errors
    /// [`MediaError::BadFrameSize`] for any other length; [`MediaError::Encode`] if libopus fails.
    pub fn encode(&mut self, frame: &[f32]) -> Result<Bytes, MediaError> {
        if frame.len() != FRAME_SAMPLES {
            return Err(MediaError::BadFrameSize {
                expected: FRAME_SAMPLES,
                actual: frame.len(),
            });
        }
        let n = self
            .inner
            .encode_float(frame, &mut self.out)
            .map_err(MediaError::Encode)?;
        Ok(Bytes::copy_from_slice(&self.out[..n]))
    }
}

/// Decodes Opus packets of any duration to 48 kHz mono, and conceals lost ones.
pub struct OpusDecoder {
    inner: opus::Decoder,
    /// Holds the largest possible packet (120 ms); results are borrowed from it.
    pcm: Box<[f32]>,
}

impl OpusDecoder {
    /// Creates a 48 kHz mono decoder.
    ///
    /// # Errors
    /// [`MediaError::DecoderCreate`] if libopus refuses.
    pub fn new() -> Result<Self, MediaError> {
        let inner =
            opus::Decoder::new(SAMPLE_RATE, Channels::Mono).map_err(MediaError::DecoderCreate)?;
        Ok(Self {
            inner,
            pcm: vec![0.0; MAX_PACKET_SAMPLES].into_boxed_slice(),
        })
    }

    /// Decodes one packet (2.5 to 120 ms) and returns its samples.
    ///
    /// # Errors
    /// [`MediaError::EmptyPacket`] for an empty packet (use [`Self::conceal`] for loss);
    /// [`MediaError::Decode`] for a corrupt one.
    pub fn decode(&mut self, packet: &[u8]) -> Result<&[f32], MediaError> {
        if packet.is_empty() {
            return Err(MediaError::EmptyPacket);
        }
        let n = self
            .inner
            .decode_float(packet, &mut self.pcm, false)
            .map_err(MediaError::Decode)?;
        Ok(&self.pcm[..n])
    }

    /// Produces `samples` of packet loss concealment in place of a lost packet.
    ///
    /// # Errors
    /// [`MediaError::BadConcealLength`] unless `samples` is a multiple of 120 (2.5 ms) and at
    /// most [`MAX_PACKET_SAMPLES`].
    pub fn conceal(&mut self, samples: usize) -> Result<&[f32], MediaError> {
        let samples = check_conceal_len(samples)?;
        let n = self
            .inner
            .decode_float(&[], &mut self.pcm[..samples], false)
            .map_err(MediaError::Decode)?;
        Ok(&self.pcm[..n])
    }

    /// Rebuilds a lost packet of `samples` length from the in-band FEC carried by
    /// `next_packet`. Decode `next_packet` normally afterwards. If `next_packet` has no FEC,
    /// libopus falls back to concealment.
    ///
    /// # Errors
    /// As [`Self::conceal`], plus [`MediaError::EmptyPacket`] and [`MediaError::Decode`].
    pub fn decode_fec(&mut self, next_packet: &[u8], samples: usize) -> Result<&[f32], MediaError> {
        if next_packet.is_empty() {
            return Err(MediaError::EmptyPacket);
        }
        let samples = check_conceal_len(samples)?;
        let n = self
            .inner
            .decode_float(next_packet, &mut self.pcm[..samples], true)
            .map_err(MediaError::Decode)?;
        Ok(&self.pcm[..n])
    }
}

/// Validates a concealment length: libopus takes the frame size to synthesize from the
/// output length, which must be whole 2.5 ms units within our buffer.
fn check_conceal_len(samples: usize) -> Result<usize, MediaError> {
    if samples == 0 || !samples.is_multiple_of(OPUS_GRANULE_SAMPLES) || samples > MAX_PACKET_SAMPLES
    {
        return Err(MediaError::BadConcealLength { samples });
    }
    Ok(samples)
}

/// Samples per channel at 48 kHz in `packet`, read from its TOC byte and frame count;
/// `None` if the packet is empty or malformed. Lets the jitter buffer size a gap before
/// decoding.
pub fn opus_packet_samples(packet: &[u8]) -> Option<usize> {
    if packet.is_empty() {
        return None;
    }
    opus::packet::get_nb_samples(packet, SAMPLE_RATE)
        .ok()
        .filter(|&n| n > 0 && n <= MAX_PACKET_SAMPLES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{dominant_frequency, rms_dbfs, SineGenerator};

    #[test]
    fn round_trip_keeps_pitch_and_level() {
        let mut enc = OpusEncoder::new(&OpusConfig::default()).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut gen = SineGenerator::new(440.0, SAMPLE_RATE, 0.5);
        let (mut input, mut output) = (Vec::new(), Vec::new());
        for _ in 0..60 {
            let frame = gen.generate(FRAME_SAMPLES);
            let packet = enc.encode(&frame).unwrap();
            assert!(!packet.is_empty() && packet.len() <= MAX_PACKET_BYTES);
            assert_eq!(opus_packet_samples(&packet), Some(FRAME_SAMPLES));
            output.extend_from_slice(dec.decode(&packet).unwrap());
            input.extend(frame);
        }
        assert_eq!(output.len(), input.len());
        // Skip the first frames: encoder look-ahead and decoder start-up.
        let steady = &output[FRAME_SAMPLES * 5..];
        let f = dominant_frequency(steady, SAMPLE_RATE);
        assert!((f - 440.0).abs() <= 5.0, "decoded {f} Hz");
        let diff = rms_dbfs(steady) - rms_dbfs(&input[FRAME_SAMPLES * 5..]);
        assert!(diff.abs() <= 3.0, "level off by {diff} dB");
    }

    /// Packets of `frame` samples from a raw libopus encoder (ours only makes 20 ms).
    fn packet_of(frame: usize) -> Vec<u8> {
        let mut enc = opus::Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip).unwrap();
        let pcm = SineGenerator::new(440.0, SAMPLE_RATE, 0.5).generate(frame);
        enc.encode_vec_float(&pcm, 4000).unwrap()
    }

    #[test]
    fn decodes_long_packets() {
        let mut dec = OpusDecoder::new().unwrap();
        for samples in [1920, 2880, MAX_PACKET_SAMPLES, 120] {
            let packet = packet_of(samples);
            assert_eq!(opus_packet_samples(&packet), Some(samples));
            assert_eq!(dec.decode(&packet).unwrap().len(), samples);
        }
    }

    #[test]
    fn conceal_and_fec_return_requested_count() {
        let mut enc = OpusEncoder::new(&OpusConfig::default()).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut gen = SineGenerator::new(440.0, SAMPLE_RATE, 0.5);
        let packets: Vec<_> = (0..10)
            .map(|_| enc.encode(&gen.generate(FRAME_SAMPLES)).unwrap())
            .collect();
        for p in &packets[..5] {
            dec.decode(p).unwrap();
        }
        assert_eq!(dec.conceal(FRAME_SAMPLES).unwrap().len(), FRAME_SAMPLES);
        assert_eq!(dec.conceal(2880).unwrap().len(), 2880);
        // Packet 6 lost, rebuilt from packet 7's FEC, then packet 7 decoded normally.
        let rebuilt = dec.decode_fec(&packets[7], FRAME_SAMPLES).unwrap();
        assert_eq!(rebuilt.len(), FRAME_SAMPLES);
        assert!(rms_dbfs(rebuilt) > -20.0, "FEC output is near silent");
        assert_eq!(dec.decode(&packets[7]).unwrap().len(), FRAME_SAMPLES);
    }

    #[test]
    fn rejects_bad_input() {
        let mut enc = OpusEncoder::new(&OpusConfig::default()).unwrap();
        for len in [0, 959, 961, 1920] {
            let err = enc.encode(&vec![0.0; len]).unwrap_err();
            assert!(
                matches!(err, MediaError::BadFrameSize { expected: 960, actual } if actual == len)
            );
        }
        let mut dec = OpusDecoder::new().unwrap();
        assert!(matches!(dec.decode(&[]), Err(MediaError::EmptyPacket)));
        for samples in [0, 100, MAX_PACKET_SAMPLES + 120] {
            assert!(matches!(
                dec.conceal(samples),
                Err(MediaError::BadConcealLength { .. })
            ));
        }
        assert_eq!(opus_packet_samples(&[]), None);
        let bad = OpusConfig {
            complexity: 11,
            ..OpusConfig::default()
        };
        assert!(matches!(
            OpusEncoder::new(&bad),
            Err(MediaError::EncoderConfig {
                setting: "complexity",
                ..
            })
        ));
    }
}
