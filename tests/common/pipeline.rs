//! Running a pipeline without WebRTC: push envelopes, end the stream, collect the outputs.

use remotemedia_webrtc::pipeline::{AudioFrame, Envelope, Pipeline, RuntimeData};
use tokio_util::sync::CancellationToken;

/// Pushes `inputs`, ends the stream and collects every output.
pub async fn run(pipeline: &Pipeline, inputs: Vec<Envelope>) -> Vec<Envelope> {
    let mut session = pipeline.start(CancellationToken::new()).unwrap();
    let input = session.input.clone();
    let feeder = tokio::spawn(async move {
        for env in inputs {
            input.send(env).await.unwrap();
        }
    });
    drop(session.input);
    let mut out = Vec::new();
    while let Some(env) = session.output.recv().await {
        out.push(env);
    }
    feeder.await.unwrap();
    out
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
