//! Track glue: RTP in → Opus decode → 20 ms frames → pipeline; pipeline → paced Opus RTP out
//! and data channel out.

use super::metrics::metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::media::Sample;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_remote::TrackRemote;

use super::activity::Activity;
use super::data_output::DataOutput;
use super::quality::MediaCounters;
use super::session_trace::SessionTrace;
use crate::media::{
    Framer, JitterBuffer, JitterOutput, OpusConfig, OpusDecoder, OpusEncoder, Resampler,
    FRAME_DURATION, FRAME_SAMPLES, MAX_PACKET_SAMPLES, SAMPLE_RATE,
};
use crate::pipeline::{AudioFrame, Envelope, OpusSettings, PipelineInput, Playback, RuntimeData};

/// Outbound audio kept ahead of the pacer; older audio is dropped (clock drift, bursts).
const MAX_OUTBOUND_FRAMES: usize = 6;
/// RTP packets queued between the track reader and the playout loop.
const INBOUND_QUEUE: usize = 64;

/// What the inbound audio task needs besides its track.
pub(crate) struct InboundAudio {
    /// Never waited on: when the pipeline is behind, its oldest queued frame is dropped.
    pub input: PipelineInput,
    pub activity: Arc<Activity>,
    pub counters: Arc<MediaCounters>,
    /// Upper bound of the jitter buffer's delay (`--jitter-buffer-ms`).
    pub max_delay: Duration,
    /// Told of the first packet.
    pub trace: Arc<SessionTrace>,
}

/// One received RTP packet, as the jitter buffer takes it.
struct Arrival {
    at: Instant,
    seq: u16,
    timestamp: u32,
    payload: Bytes,
}

/// Reads one remote audio track into a jitter buffer and plays it out every 20 ms into the
/// pipeline, until the track ends or `cancel` fires.
pub(crate) async fn receive_audio(
    track: Arc<TrackRemote>,
    inbound: InboundAudio,
    cancel: CancellationToken,
) {
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
    // Reading and playout run side by side in this one task; the channel between them keeps
    // `read_rtp` out of the ticker's `select!` (it is not cancel-safe).
    tokio::join!(
        read_track(
            track,
            tx,
            Arc::clone(&inbound.activity),
            Arc::clone(&inbound.trace),
            cancel.clone()
        ),
        play_out(rx, inbound, cancel)
    );
}

async fn read_track(
    track: Arc<TrackRemote>,
    tx: mpsc::Sender<Arrival>,
    activity: Arc<Activity>,
    trace: Arc<SessionTrace>,
    cancel: CancellationToken,
) {
    // Dropped at the first packet: nothing per packet after that.
    let mut first_in = Some(trace);
    loop {
        let packet = tokio::select! {
            read = track.read_rtp() => match read {
                Ok((packet, _)) => packet,
                Err(_) => break,
            },
            () = cancel.cancelled() => break,
        };
        activity.touch();
        if let Some(trace) = first_in.take() {
            trace.first_rtp_in();
        }
        if packet.payload.is_empty() {
            continue;
        }
        let arrival = Arrival {
            at: tokio::time::Instant::now().into_std(),
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            payload: packet.payload,
        };
        tokio::select! {
            sent = tx.send(arrival) => if sent.is_err() { break },
            () = cancel.cancelled() => break,
        }
    }
}

async fn play_out(
    mut rx: mpsc::Receiver<Arrival>,
    inbound: InboundAudio,
    cancel: CancellationToken,
) {
    let mut decoder = match OpusDecoder::new() {
        Ok(decoder) => decoder,
        Err(err) => {
            tracing::error!(%err, "cannot create the Opus decoder; inbound audio ignored");
            return;
        }
    };
    let mut buffer = JitterBuffer::new(inbound.max_delay);
    let mut framer = Framer::with_max_buffered(FRAME_SAMPLES * 10);
    loop {
        // Wake exactly when the buffer has the next frame due (or a frame from now when it
        // is idle), not on a free-running ticker whose phase would add up to 20 ms.
        let now = tokio::time::Instant::now();
        let due = buffer
            .next_due()
            .map_or(now + FRAME_DURATION, tokio::time::Instant::from_std);
        tokio::select! {
            () = cancel.cancelled() => break,
            arrival = rx.recv() => match arrival {
                Some(a) => buffer.push(a.at, a.seq, a.timestamp, a.payload),
                None => break, // end of track
            },
            () = tokio::time::sleep_until(due) => {}
        }
        let now = tokio::time::Instant::now().into_std();
        let mut played = false;
        while let Some(output) = buffer.pop(now) {
            play(&mut decoder, output, &mut framer);
            played = true;
        }
        if !played {
            continue;
        }
        inbound.counters.update_jitter(buffer.stats());
        let frames = std::iter::from_fn(|| framer.pop()).map(|frame| {
            Envelope::new(RuntimeData::Audio(AudioFrame {
                samples: frame,
                sample_rate: SAMPLE_RATE,
                channels: 1,
            }))
        });
        if inbound.input.push_audio(frames).is_err() {
            return;
        }
    }
    inbound.counters.update_jitter(buffer.stats());
}

/// Decodes or conceals one jitter buffer output into `framer`. A failure plays silence of
/// the same length so the stream keeps its timing.
fn play(decoder: &mut OpusDecoder, output: JitterOutput, framer: &mut Framer) {
    let started = std::time::Instant::now();
    let mut skip = 0;
    let (result, samples) = match &output {
        JitterOutput::Decode {
            payload,
            samples,
            skip: start,
        } => {
            skip = *start;
            (decoder.decode(payload), *samples)
        }
        JitterOutput::Conceal { samples } => (decoder.conceal(*samples), *samples),
        JitterOutput::Fec {
            next_payload,
            samples,
        } => (decoder.decode_fec(next_payload, *samples), *samples),
    };
    metrics()
        .opus_seconds
        .with_label_values(&["decode"])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(pcm) => framer.push(pcm.get(skip..).unwrap_or_default()),
        Err(err) => {
            tracing::debug!(%err, "Opus decode or concealment failed; silence instead");
            framer.push(&vec![
                0.0;
                samples.saturating_sub(skip).min(MAX_PACKET_SAMPLES)
            ]);
        }
    }
}

/// Sends what the pipeline outputs: audio as Opus on `track`, each 20 ms frame as soon as it
/// is complete but never faster than real time (a [`Pacer`] slot each); everything else is
/// handed to `data` without waiting (a client that stops taking its data-channel messages
/// must not stop its audio). `track` is `None` in `media.audio: forward`, where the client's
/// own RTP goes back and pipeline audio is not sent. Each frame sent is reported to
/// `playback`, and its flushes drop the audio held here (barge-in).
#[allow(clippy::too_many_arguments)] // one per thing the output joins; a struct would only rename them
pub(crate) async fn send_pipeline_output(
    mut output: mpsc::Receiver<Envelope>,
    track: Option<Arc<TrackLocalStaticSample>>,
    playback: Playback,
    data: DataOutput,
    opus: OpusSettings,
    counters: Arc<MediaCounters>,
    trace: Arc<SessionTrace>,
    cancel: CancellationToken,
) {
    // Dropped once the first packet has left: nothing per packet after that.
    let mut first_out = Some(trace);
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
    let mut pacer = Pacer::default();
    let mut output_open = true;
    loop {
        // A frame goes out as soon as it is complete, unless that would be faster than real
        // time: then at its pacing slot. Loopback frames arrive every 20 ms from the
        // playout, so they leave at once instead of waiting up to 20 ms for a free-running
        // ticker.
        let ready = track.is_some() && outbound.framer.buffered() >= FRAME_SAMPLES;
        let wake = pacer.next_slot(tokio::time::Instant::now());
        tokio::select! {
            () = cancel.cancelled() => break,
            () = playback.flush_asked() => if playback.take_flush() {
                flush(&mut outbound, &mut pacer, &mut output, &data);
            },
            envelope = output.recv(), if output_open => match envelope {
                None => {
                    output_open = false;
                    outbound.finish();
                }
                Some(Envelope { data: RuntimeData::Audio(frame), .. }) => outbound.push(&frame),
                Some(envelope) => data.send(envelope),
            },
            () = tokio::time::sleep_until(wake), if ready => {}
        }
        let Some(track) = &track else { continue };
        while outbound.framer.buffered() >= FRAME_SAMPLES && pacer.take(tokio::time::Instant::now())
        {
            if !outbound.framer.pop_into(&mut outbound.frame) {
                break;
            }
            let sent = send_frame(&mut encoder, &outbound.frame, track, &counters).await;
            playback.played(tokio::time::Instant::now(), outbound.held());
            if sent && first_out.as_ref().is_some_and(|t| t.first_rtp_out()) {
                first_out = None;
            }
        }
    }
}

/// Barge-in: drops the pipeline audio held here and the audio already waiting in `output`
/// (all of it made before the flush was asked for: the node that asked said nothing since),
/// passing on its other messages; the pacer starts afresh for the next speech.
fn flush(
    outbound: &mut OutboundAudio,
    pacer: &mut Pacer,
    output: &mut mpsc::Receiver<Envelope>,
    data: &DataOutput,
) {
    let mut dropped = outbound.clear();
    while let Ok(envelope) = output.try_recv() {
        match envelope.data {
            RuntimeData::Audio(frame) => dropped += frame.samples.len(),
            _ => data.send(envelope),
        }
    }
    *pacer = Pacer::default();
    tracing::debug!(dropped, "pipeline audio flushed (barge-in)");
}

/// Encodes one frame and writes it to the track; whether it left.
async fn send_frame(
    encoder: &mut OpusEncoder,
    frame: &[f32],
    track: &TrackLocalStaticSample,
    counters: &MediaCounters,
) -> bool {
    let started = std::time::Instant::now();
    let encoded = encoder.encode(frame);
    metrics()
        .opus_seconds
        .with_label_values(&["encode"])
        .observe(started.elapsed().as_secs_f64());
    match encoded {
        Ok(data) => {
            let sample = Sample {
                data,
                duration: FRAME_DURATION,
                ..Default::default()
            };
            match track.write_sample(&sample).await {
                Ok(()) => {
                    counters.packet_sent();
                    return true;
                }
                Err(err) => tracing::debug!(%err, "writing audio sample failed"),
            }
        }
        Err(err) => tracing::warn!(%err, "Opus encode failed; frame dropped"),
    }
    false
}

/// Real-time pacing of outbound frames: at most one per 20 ms slot, never in bursts, and a
/// frame that is ready early in its slot waits for the slot (sans-IO: the caller passes `now`).
#[derive(Debug, Default)]
struct Pacer {
    /// The earliest time the next frame may leave; `None` before the first frame.
    next: Option<tokio::time::Instant>,
    /// When the last frame left: catching up never sends two frames closer than
    /// [`PACER_MIN_GAP`].
    last: Option<tokio::time::Instant>,
}

/// A frame this early for its slot still goes (scheduling noise, not a burst).
const PACER_SLACK: Duration = Duration::from_millis(2);
/// Later than this for its slot, a frame restarts the schedule rather than catching up.
const PACER_RESTART: Duration = Duration::from_millis(100);
/// The closest two frames ever leave: a frame late for its slot and the next one on time
/// would otherwise go back to back (a burst), e.g. when the jitter buffer's delay grows
/// right after it shrank.
const PACER_MIN_GAP: Duration = Duration::from_millis(16);

impl Pacer {
    /// When the next frame may leave.
    fn next_slot(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        let slot = self
            .next
            .map_or(now, |next| next.checked_sub(PACER_SLACK).unwrap_or(next));
        self.last
            .map_or(slot, |last| slot.max(last + PACER_MIN_GAP))
    }

    /// True (and the slot consumed) when a frame may leave at `now`.
    fn take(&mut self, now: tokio::time::Instant) -> bool {
        if now < self.next_slot(now) {
            return false;
        }
        // A frame late for its slot (this task was scheduled late) keeps the schedule, so the
        // next ones catch up instead of the stream falling behind real time; after a pause
        // (nothing to send for a while) the schedule restarts at `now`, without a burst.
        let base = match self.next {
            Some(next) if now.saturating_duration_since(next) <= PACER_RESTART => next,
            _ => now,
        };
        self.next = Some(base + FRAME_DURATION);
        self.last = Some(now);
        true
    }
}

/// Pipeline audio of any rate and chunk size, turned into exact 48 kHz mono 20 ms frames.
pub(crate) struct OutboundAudio {
    framer: Framer,
    /// The frame being encoded (no allocation per frame).
    frame: [f32; FRAME_SAMPLES],
    resampler: Option<(u32, Resampler)>,
    scratch: Vec<f32>,
}

impl OutboundAudio {
    pub(crate) fn new() -> Self {
        Self {
            framer: Framer::with_max_buffered(FRAME_SAMPLES * MAX_OUTBOUND_FRAMES),
            frame: [0.0; FRAME_SAMPLES],
            resampler: None,
            scratch: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, frame: &AudioFrame) {
        let channels = usize::from(frame.channels.max(1));
        if channels == 1 && (frame.sample_rate == SAMPLE_RATE || frame.sample_rate == 0) {
            // The common case: straight into the framer, no copy of the frame.
            self.framer.push(&frame.samples);
            return;
        }
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

    /// Moves the next whole 20 ms frame into [`OutboundAudio::frame`]; false when there is none.
    pub(crate) fn pop_frame(&mut self) -> bool {
        self.framer.buffered() >= FRAME_SAMPLES && self.framer.pop_into(&mut self.frame)
    }

    /// The audio held, not yet sent.
    fn held(&self) -> Duration {
        Duration::from_secs_f64(self.framer.buffered() as f64 / f64::from(SAMPLE_RATE))
    }

    /// Drops everything held (and the resampler's state); the samples dropped.
    fn clear(&mut self) -> usize {
        let held = self.framer.buffered();
        self.framer.clear();
        self.resampler = None;
        held
    }

    /// The frame [`OutboundAudio::pop_frame`] moved out.
    pub(crate) fn frame(&self) -> &[f32] {
        &self.frame
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_lets_one_frame_per_slot_and_never_bursts_after_a_pause() {
        let t0 = tokio::time::Instant::now();
        let mut pacer = Pacer::default();
        assert!(pacer.take(t0));
        // A second frame at once waits for its slot.
        assert!(!pacer.take(t0));
        assert!(!pacer.take(t0 + Duration::from_millis(10)));
        assert!(pacer.take(t0 + Duration::from_millis(19)));
        assert!(pacer.take(t0 + Duration::from_millis(40)));
        // Late by 10 ms for the 60 ms slot (scheduling): the schedule holds at 80 ms, but
        // not closer than the minimum gap to the late frame.
        assert!(pacer.take(t0 + Duration::from_millis(70)));
        assert!(!pacer.take(t0 + Duration::from_millis(78)));
        assert!(pacer.take(t0 + Duration::from_millis(86)));
        assert!(pacer.take(t0 + Duration::from_millis(102)));
        // After a second of nothing: one frame, then the schedule restarts.
        let later = t0 + Duration::from_secs(1);
        assert!(pacer.take(later));
        assert!(!pacer.take(later + Duration::from_millis(1)));
        assert!(pacer.take(later + Duration::from_millis(20)));
    }

    #[test]
    fn catching_up_never_sends_two_frames_back_to_back() {
        let t0 = tokio::time::Instant::now();
        let mut pacer = Pacer::default();
        assert!(pacer.take(t0));
        // 19 ms late for the 20 ms slot, then the next frame is ready at once: it waits for
        // the minimum gap instead of leaving right behind the late one.
        let late = t0 + Duration::from_millis(39);
        assert!(pacer.take(late));
        assert!(!pacer.take(late + Duration::from_millis(1)));
        assert_eq!(pacer.next_slot(late), late + PACER_MIN_GAP);
        assert!(pacer.take(late + PACER_MIN_GAP));
    }
}
