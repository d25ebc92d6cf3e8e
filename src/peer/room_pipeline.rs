//! A room's pipeline (`--room-manifest`): a bot in the room with no extra WebRTC hop. Its
//! audio input is the mix of the participants' decoded audio (48 kHz mono, 20 ms frames);
//! its audio output is published to every participant as the track
//! `remotemedia-room room-audio` (forwarded like a participant's: the same [`Fanout`]); its
//! data output goes to every room channel as `{"type":"pipeline","data":…}`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;

use super::audio::OutboundAudio;
use super::room_actor::Command;
use super::room_forward::{Fanout, ForwardCounters};
use crate::media::{OpusConfig, OpusDecoder, OpusEncoder, FRAME_SAMPLES, SAMPLE_RATE};
use crate::pipeline::{AudioFrame, Envelope, PipelineSession, RuntimeData};
use crate::room::ProducerId;

/// The publisher id of the room pipeline's track (its msid stream id).
pub(crate) const ROOM_PUBLISHER: &str = "remotemedia-room";
/// The room pipeline's audio track id.
pub(crate) const ROOM_AUDIO_TRACK: &str = "room-audio";
/// The payload type the room's Opus packets carry before each subscriber's binding sets its
/// own (the server registers Opus as 111).
const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Decoded audio kept per participant for the mix: 200 ms; older samples are dropped, so a
/// publisher whose clock runs fast never delays the mix by more.
const MAX_QUEUED_SAMPLES: usize = FRAME_SAMPLES * 10;
/// Mixing period.
const FRAME: Duration = Duration::from_millis(20);

/// The participants' decoded audio, mixed every 20 ms for the room pipeline. A room with a
/// pipeline has one from the start, but feeds it only while the pipeline runs here (a
/// spanning room runs it on its lead worker only: `room_lead.rs`).
#[derive(Default)]
pub(crate) struct Mixer {
    queues: Mutex<HashMap<ProducerId, VecDeque<f32>>>,
    active: AtomicBool,
}

impl Mixer {
    /// Whether the pipeline runs here: tracks are decoded into the mix only then.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// The pipeline started (`true`) or stopped here; stopping forgets what was queued.
    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Relaxed);
        if !active {
            self.queues.lock().clear();
        }
    }

    /// Adds a participant's decoded 48 kHz mono samples.
    pub fn push(&self, producer: ProducerId, samples: &[f32]) {
        if !self.is_active() {
            return;
        }
        let mut queues = self.queues.lock();
        let queue = queues.entry(producer).or_default();
        queue.extend(samples);
        let excess = queue.len().saturating_sub(MAX_QUEUED_SAMPLES);
        queue.drain(..excess);
    }

    /// Forgets a track that ended.
    pub fn remove(&self, producer: ProducerId) {
        self.queues.lock().remove(&producer);
    }

    /// The next 20 ms: each participant's next samples summed (silence where one has none),
    /// clipped to [-1, 1].
    pub fn mix(&self) -> Vec<f32> {
        let mut frame = vec![0.0f32; FRAME_SAMPLES];
        for queue in self.queues.lock().values_mut() {
            let take = queue.len().min(FRAME_SAMPLES);
            for (out, sample) in frame.iter_mut().zip(queue.drain(..take)) {
                *out += sample;
            }
        }
        for sample in &mut frame {
            *sample = sample.clamp(-1.0, 1.0);
        }
        frame
    }
}

/// A room pipeline running here: dropping it stops the pipeline and uncounts it.
pub(crate) struct RunningPipeline {
    /// The pipeline's audio track in the room.
    pub track: ProducerId,
    _stop: tokio_util::sync::DropGuard,
}

impl RunningPipeline {
    pub fn new(track: ProducerId, stop: CancellationToken) -> Self {
        super::metrics::metrics().room_pipelines_running.inc();
        Self {
            track,
            _stop: stop.drop_guard(),
        }
    }
}

impl Drop for RunningPipeline {
    fn drop(&mut self) {
        super::metrics::metrics().room_pipelines_running.dec();
    }
}

/// A track relayed from another worker, decoded into the lead's mix (`room_lead.rs`).
pub(crate) struct MixTap {
    mixer: Arc<Mixer>,
    producer: ProducerId,
    decoder: Mutex<Option<OpusDecoder>>,
}

impl MixTap {
    pub fn new(mixer: Arc<Mixer>, producer: ProducerId) -> Self {
        Self {
            mixer,
            producer,
            decoder: Mutex::new(None),
        }
    }

    /// Decodes one relayed Opus payload into the mix, while the pipeline runs here.
    pub fn feed(&self, payload: &[u8]) {
        if !self.mixer.is_active() {
            return;
        }
        let mut decoder = self.decoder.lock();
        if decoder.is_none() {
            *decoder = OpusDecoder::new().ok();
        }
        let Some(decoder) = decoder.as_mut() else {
            return;
        };
        match decoder.decode(payload) {
            Ok(samples) => self.mixer.push(self.producer, samples),
            Err(err) => tracing::debug!(%err, "room pipeline input: undecodable relayed packet"),
        }
    }
}

/// What a running room pipeline needs.
pub(crate) struct RoomPipeline {
    pub session: PipelineSession,
    pub mixer: Arc<Mixer>,
    /// The subscribers of the pipeline's audio track.
    pub fanout: Arc<Fanout>,
    pub opus: OpusConfig,
    /// The SSRC its packets carry: the room's source knows it, so that a subscriber's
    /// recycled line switches to it.
    pub ssrc: u32,
    /// The room's task, for the pipeline's data output.
    pub commands: mpsc::WeakSender<Command>,
}

impl RoomPipeline {
    /// Feeds the mix in every 20 ms and sends what comes out, until `cancel` (the room ended).
    pub async fn run(self, cancel: CancellationToken) {
        let Self {
            session,
            mixer,
            fanout,
            opus,
            ssrc,
            commands,
        } = self;
        let mut output = session.output;
        let input = session.input;
        let mut encoder = match OpusEncoder::new(&opus) {
            Ok(encoder) => encoder,
            Err(err) => {
                tracing::error!(%err, "room pipeline: no Opus encoder; its audio is not sent");
                return;
            }
        };
        let mut outbound = OutboundAudio::new();
        let mut rtp = RtpStamp::new(ssrc);
        let counters = ForwardCounters::new("audio");
        let mut ticker = tokio::time::interval(FRAME);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {
                    let frame = Envelope::new(RuntimeData::Audio(AudioFrame {
                        samples: mixer.mix(),
                        sample_rate: SAMPLE_RATE,
                        channels: 1,
                    }));
                    if input.push_audio([frame]).is_err() {
                        break;
                    }
                }
                envelope = output.recv() => match envelope {
                    None => break,
                    Some(Envelope { data: RuntimeData::Audio(frame), .. }) => outbound.push(&frame),
                    Some(envelope) => {
                        let Some(data) = pipeline_data(envelope.data) else { continue };
                        let Some(commands) = commands.upgrade() else { break };
                        // Waiting here slows the pipeline, never the media of the room.
                        if commands.send(Command::PipelineData { data }).await.is_err() {
                            break;
                        }
                    }
                },
            }
            while outbound.pop_frame() {
                let payload = match encoder.encode(outbound.frame()) {
                    Ok(payload) => payload,
                    Err(err) => {
                        tracing::warn!(%err, "room pipeline: Opus encode failed; frame dropped");
                        continue;
                    }
                };
                let packet = rtp.next(payload);
                fanout.send(&packet, &counters).await;
            }
        }
    }
}

/// The room track's own RTP numbering (each subscriber's consumer rewrites it again).
struct RtpStamp {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
}

impl RtpStamp {
    fn new(ssrc: u32) -> Self {
        Self {
            ssrc,
            sequence: rand::random(),
            timestamp: rand::random(),
        }
    }

    fn next(&mut self, payload: bytes::Bytes) -> Packet {
        let packet = Packet {
            header: Header {
                version: 2,
                payload_type: OPUS_PAYLOAD_TYPE,
                sequence_number: self.sequence,
                timestamp: self.timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self
            .timestamp
            .wrapping_add(u32::try_from(FRAME_SAMPLES).unwrap_or(960));
        packet
    }
}

/// A pipeline output as the `data` of a room channel message: JSON as its value, text as a
/// string; other kinds (binary, tensors) have no JSON form and are not sent.
fn pipeline_data(data: RuntimeData) -> Option<serde_json::Value> {
    match data {
        RuntimeData::Json { payload, .. } => {
            Some(serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)))
        }
        RuntimeData::Text { text, .. } => Some(serde_json::Value::String(text)),
        other => {
            tracing::debug!(kind = ?std::mem::discriminant(&other), "room pipeline output not sent");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_sums_each_participants_next_20_ms_and_clips() {
        let mixer = Mixer::default();
        mixer.set_active(true);
        mixer.push(ProducerId(1), &[0.25; FRAME_SAMPLES]);
        mixer.push(ProducerId(2), &[0.5; FRAME_SAMPLES / 2]);
        let frame = mixer.mix();
        assert_eq!(frame.len(), FRAME_SAMPLES);
        assert!((frame[0] - 0.75).abs() < 1e-6, "both: {}", frame[0]);
        assert!(
            (frame[FRAME_SAMPLES - 1] - 0.25).abs() < 1e-6,
            "one ran out"
        );
        mixer.push(ProducerId(1), &[0.9; FRAME_SAMPLES]);
        mixer.push(ProducerId(2), &[0.9; FRAME_SAMPLES]);
        assert!(mixer.mix().iter().all(|s| *s == 1.0), "clipped");
        assert!(
            mixer.mix().iter().all(|s| *s == 0.0),
            "silence when nobody sent"
        );
    }

    #[test]
    fn a_participant_never_queues_more_than_200_ms() {
        let mixer = Mixer::default();
        mixer.set_active(true);
        for i in 0..20 {
            mixer.push(ProducerId(1), &[i as f32 / 100.0; FRAME_SAMPLES]);
        }
        // The oldest half was dropped: the next frame is the 11th pushed.
        assert!((mixer.mix()[0] - 0.10).abs() < 1e-6);
        mixer.remove(ProducerId(1));
        assert!(mixer.mix().iter().all(|s| *s == 0.0));
    }

    #[test]
    fn a_mixer_takes_nothing_while_the_pipeline_runs_elsewhere() {
        let mixer = Arc::new(Mixer::default());
        mixer.push(ProducerId(1), &[0.5; FRAME_SAMPLES]);
        assert!(
            mixer.mix().iter().all(|s| *s == 0.0),
            "inactive: nothing kept"
        );
        mixer.set_active(true);
        mixer.push(ProducerId(1), &[0.5; FRAME_SAMPLES]);
        mixer.set_active(false);
        mixer.set_active(true);
        assert!(
            mixer.mix().iter().all(|s| *s == 0.0),
            "stopping forgot what was queued"
        );
        // A relayed track's tap decodes only while the pipeline runs here.
        let tap = MixTap::new(Arc::clone(&mixer), ProducerId(2));
        mixer.set_active(false);
        tap.feed(&[0xf8, 0xff, 0xfe]);
        assert!(
            tap.decoder.lock().is_none(),
            "no decoder made while inactive"
        );
    }

    #[test]
    fn json_and_text_outputs_become_room_data_and_others_do_not() {
        let json = RuntimeData::Json {
            payload: r#"{"speech":true}"#.into(),
            schema_type: "vad".into(),
        };
        assert_eq!(
            pipeline_data(json),
            Some(serde_json::json!({"speech": true}))
        );
        let text = RuntimeData::Text {
            text: "hi".into(),
            language: String::new(),
        };
        assert_eq!(pipeline_data(text), Some(serde_json::json!("hi")));
        let binary = RuntimeData::Binary {
            data: bytes::Bytes::from_static(b"x"),
            mime_type: String::new(),
        };
        assert_eq!(pipeline_data(binary), None);
    }
}
