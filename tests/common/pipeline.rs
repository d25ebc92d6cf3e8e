//! Running a pipeline without WebRTC: push envelopes, end the stream, collect the outputs.

use remotemedia_webrtc::pipeline::{AudioFrame, Envelope, Pipeline, RuntimeData};

/// Pushes `inputs`, ends the stream and collects every output.
pub async fn run(pipeline: &Pipeline, inputs: Vec<Envelope>) -> Vec<Envelope> {
    pipeline.run_to_end(inputs).await.unwrap().0
}

/// 20 ms frames of 48 kHz mono audio.
pub fn frames(samples: &[f32]) -> Vec<Envelope> {
    samples
        .chunks(960)
        .map(|c| {
            Envelope::new(RuntimeData::Audio(AudioFrame {
                samples: c.to_vec(),
                sample_rate: 48_000,
                channels: 1,
            }))
        })
        .collect()
}
