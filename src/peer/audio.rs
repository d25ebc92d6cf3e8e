//! Track glue: RTP in → Opus decode → 20 ms frames → pipeline; pipeline → paced Opus RTP out
//! and data channel out.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::RTCDataChannel;
use webrtc::media::Sample;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_remote::TrackRemote;

use super::activity::Activity;
use super::server_peer::encode_data_message;
use crate::media::{
    Framer, OpusConfig, OpusDecoder, OpusEncoder, Resampler, FRAME_DURATION, FRAME_SAMPLES,
    SAMPLE_RATE,
};
use crate::pipeline::{AudioFrame, Envelope, OpusSettings, RuntimeData};

/// Losses longer than this many packets are not concealed (the stream restarted).
const MAX_CONCEALED_PACKETS: u16 = 5;
/// Outbound audio kept ahead of the pacer; older audio is dropped (clock drift, bursts).
const MAX_OUTBOUND_FRAMES: usize = 6;

/// Reads one remote audio track until it ends or `cancel` fires.
pub(crate) async fn receive_audio(
    track: Arc<TrackRemote>,
    input: mpsc::Sender<Envelope>,
    activity: Arc<Activity>,
    cancel: CancellationToken,
) {
    let mut decoder = match OpusDecoder::new() {
        Ok(decoder) => decoder,
        Err(err) => {
            tracing::error!(%err, "cannot create the Opus decoder; inbound audio ignored");
            return;
        }
    };
    let mut framer = Framer::with_max_buffered(FRAME_SAMPLES * 10);
    let mut last_sequence: Option<u16> = None;
    let mut last_packet_samples = FRAME_SAMPLES;
    loop {
        let packet = tokio::select! {
            read = track.read_rtp() => match read {
                Ok((packet, _)) => packet,
                Err(_) => break,
            },
            () = cancel.cancelled() => break,
        };
        activity.touch();
        if packet.payload.is_empty() {
            continue;
        }
        let sequence = packet.header.sequence_number;
        if let Some(previous) = last_sequence {
            let delta = sequence.wrapping_sub(previous);
            if delta == 0 || delta >= 0x8000 {
                continue; // duplicate or late: no jitter buffer yet, so it is dropped
            }
            let lost = delta - 1;
            if lost > 0 && lost <= MAX_CONCEALED_PACKETS {
                for i in 0..lost {
                    let recovered = if i + 1 == lost {
                        decoder.decode_fec(&packet.payload, last_packet_samples)
                    } else {
                        decoder.conceal(last_packet_samples)
                    };
                    match recovered {
                        Ok(samples) => framer.push(samples),
                        Err(err) => tracing::debug!(%err, "concealment failed"),
                    }
                }
            }
        }
        last_sequence = Some(sequence);
        match decoder.decode(&packet.payload) {
            Ok(samples) => {
                last_packet_samples = samples.len().max(1);
                framer.push(samples);
            }
            Err(err) => {
                tracing::debug!(%err, "undecodable Opus packet dropped");
                continue;
            }
        }
        while let Some(frame) = framer.pop() {
            let envelope = Envelope::new(RuntimeData::Audio(AudioFrame {
                samples: frame,
                sample_rate: SAMPLE_RATE,
                channels: 1,
            }));
            if input.send(envelope).await.is_err() {
                return;
            }
        }
    }
}

/// Sends what the pipeline outputs: audio as Opus on `track`, one 20 ms frame per tick of a
/// real-time ticker (never in bursts); everything else on the data channels.
pub(crate) async fn send_pipeline_output(
    mut output: mpsc::Receiver<Envelope>,
    track: Arc<TrackLocalStaticSample>,
    mut new_channels: mpsc::Receiver<Arc<RTCDataChannel>>,
    opus: OpusSettings,
    cancel: CancellationToken,
) {
    let config = OpusConfig {
        bitrate_bps: opus.bitrate,
        complexity: opus.complexity,
        fec: opus.fec,
        dtx: opus.dtx,
    };
    let mut encoder = match OpusEncoder::new(&config) {
        Ok(encoder) => encoder,
        Err(err) => {
            tracing::error!(%err, "cannot create the Opus encoder; outbound audio disabled");
            return;
        }
    };
    let mut outbound = OutboundAudio::new();
    let mut channels: Vec<Arc<RTCDataChannel>> = Vec::new();
    let mut ticker = tokio::time::interval(FRAME_DURATION);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut output_open = true;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(channel) = new_channels.recv() => channels.push(channel),
            envelope = output.recv(), if output_open => match envelope {
                None => {
                    output_open = false;
                    outbound.finish();
                }
                Some(Envelope { data: RuntimeData::Audio(frame), .. }) => outbound.push(&frame),
                Some(envelope) => send_to_channels(&mut channels, envelope).await,
            },
            _ = ticker.tick() => {
                let Some(frame) = outbound.framer.pop() else { continue };
                match encoder.encode(&frame) {
                    Ok(data) => {
                        let sample = Sample { data, duration: FRAME_DURATION, ..Default::default() };
                        if let Err(err) = track.write_sample(&sample).await {
                            tracing::debug!(%err, "writing audio sample failed");
                        }
                    }
                    Err(err) => tracing::warn!(%err, "Opus encode failed; frame dropped"),
                }
            }
        }
    }
}

async fn send_to_channels(channels: &mut Vec<Arc<RTCDataChannel>>, envelope: Envelope) {
    if channels.is_empty() {
        tracing::debug!("pipeline output for the data channel, but none is open; dropped");
        return;
    }
    let data = encode_data_message(envelope);
    let mut open = Vec::with_capacity(channels.len());
    for channel in channels.drain(..) {
        match channel.send(&data).await {
            Ok(_) => open.push(channel),
            Err(err) => tracing::debug!(%err, label = channel.label(), "data channel send failed"),
        }
    }
    *channels = open;
}

/// Pipeline audio of any rate and chunk size, turned into exact 48 kHz mono 20 ms frames.
struct OutboundAudio {
    framer: Framer,
    resampler: Option<(u32, Resampler)>,
    scratch: Vec<f32>,
}

impl OutboundAudio {
    fn new() -> Self {
        Self {
            framer: Framer::with_max_buffered(FRAME_SAMPLES * MAX_OUTBOUND_FRAMES),
            resampler: None,
            scratch: Vec::new(),
        }
    }

    fn push(&mut self, frame: &AudioFrame) {
        let channels = usize::from(frame.channels.max(1));
        let mono: Vec<f32> = if channels == 1 {
            frame.samples.clone()
        } else {
            frame
                .samples
                .chunks(channels)
                .map(|c| c.iter().sum::<f32>() / c.len() as f32)
                .collect()
        };
        if frame.sample_rate == SAMPLE_RATE || frame.sample_rate == 0 {
            self.framer.push(&mono);
            return;
        }
        if self.resampler.as_ref().map(|(rate, _)| *rate) != Some(frame.sample_rate) {
            match Resampler::new(frame.sample_rate, SAMPLE_RATE) {
                Ok(resampler) => self.resampler = Some((frame.sample_rate, resampler)),
                Err(err) => {
                    tracing::warn!(%err, rate = frame.sample_rate, "cannot resample pipeline audio");
                    return;
                }
            }
        }
        if let Some((_, resampler)) = self.resampler.as_mut() {
            self.scratch.clear();
            match resampler.process(&mono, &mut self.scratch) {
                Ok(()) => self.framer.push(&self.scratch),
                Err(err) => tracing::warn!(%err, "resampling failed; audio dropped"),
            }
        }
    }

    /// The pipeline ended: what remains is sent, padded to a whole frame.
    fn finish(&mut self) {
        if let Some((_, resampler)) = self.resampler.as_mut() {
            self.scratch.clear();
            resampler.flush(&mut self.scratch);
            self.framer.push(&self.scratch);
        }
        if let Some(last) = self.framer.flush() {
            self.framer.push(&last);
        }
    }
}
