//! A room's packet path: one published track read once and copied to each subscriber's
//! forwarded line (LiveKit's receiver and *DownTracks*). The room decides who gets what; this
//! only applies it, one [`Consumer`] (SSRC, sequence numbers, timestamps, header extensions)
//! per subscriber.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_remote::TrackRemote;

use super::activity::Activity;
use super::metrics::metrics;
use super::room_pipeline::Mixer;
use super::video::KEYFRAME_REQUEST_INTERVAL;
use crate::media::OpusDecoder;
use crate::room::{AudioLevel, Consumer, ParticipantId, ProducerId};

/// One subscriber's copy of a published track.
pub(crate) struct Sink {
    pub subscriber: ParticipantId,
    /// The subscriber's forwarded line (its sender's track).
    pub track: Arc<TrackLocalStaticRTP>,
    pub consumer: Consumer,
    /// The subscriber's media activity: forwarding to it counts.
    pub activity: Arc<Activity>,
}

/// What arrived on a published track since the room last looked: packets (is it still
/// sending?) and the loudest RFC 6464 level (who is speaking?). Two atomics per packet, so
/// the packet path never waits on the room's task; the room samples it on its tick.
pub(crate) struct Meter {
    packets: AtomicU32,
    /// Loudest level in −dBov ([`NO_LEVEL`]: none seen).
    loudest: AtomicU8,
}

/// No audio level seen since the last sample.
const NO_LEVEL: u8 = u8::MAX;

impl Default for Meter {
    fn default() -> Self {
        Self {
            packets: AtomicU32::new(0),
            loudest: AtomicU8::new(NO_LEVEL),
        }
    }
}

impl Meter {
    fn record(&self, level: Option<AudioLevel>) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        if let Some(level) = level {
            self.loudest.fetch_min(level.dbov, Ordering::Relaxed);
        }
    }

    /// Packets and the loudest level since the previous sample.
    pub fn sample(&self) -> (u32, Option<AudioLevel>) {
        let packets = self.packets.swap(0, Ordering::Relaxed);
        let loudest = self.loudest.swap(NO_LEVEL, Ordering::Relaxed);
        let level = (loudest != NO_LEVEL).then_some(AudioLevel {
            dbov: loudest,
            voice: false,
        });
        (packets, level)
    }
}

/// The subscribers of one published track. Locked per packet only to rewrite headers, never
/// across a write.
#[derive(Default)]
pub(crate) struct Fanout {
    sinks: Mutex<Vec<Sink>>,
    pub meter: Meter,
}

impl Fanout {
    pub fn add(&self, sink: Sink) {
        let mut sinks = self.sinks.lock();
        sinks.retain(|s| s.subscriber != sink.subscriber);
        sinks.push(sink);
    }

    /// Takes `subscriber`'s copy off (its consumer goes back to its line for reuse).
    pub fn take(&self, subscriber: &ParticipantId) -> Option<Sink> {
        let mut sinks = self.sinks.lock();
        let index = sinks.iter().position(|s| &s.subscriber == subscriber)?;
        Some(sinks.swap_remove(index))
    }

    /// Pauses or resumes `subscriber`'s copy (last-N, `off`).
    pub fn set_paused(&self, subscriber: &ParticipantId, paused: bool) {
        if let Some(sink) = self
            .sinks
            .lock()
            .iter_mut()
            .find(|s| &s.subscriber == subscriber)
        {
            if paused {
                sink.consumer.rtp().pause();
            } else {
                sink.consumer.rtp().resume();
            }
        }
    }

    /// Writes each subscriber's copy of `packet`; a copy that left counts as the subscriber's
    /// media activity and in `counters`.
    pub async fn send(&self, packet: &Packet, counters: &ForwardCounters) {
        for (track, copy, activity) in self.copies(packet, Instant::now()) {
            match track.write_rtp(&copy).await {
                Ok(written) if written > 0 => {
                    activity.touch();
                    counters.packets.inc();
                    counters.bytes.inc_by(written as u64);
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(%err, "forwarding a room packet failed"),
            }
        }
    }

    /// Each subscriber's copy of `packet` and where it goes.
    fn copies(
        &self,
        packet: &Packet,
        now: Instant,
    ) -> Vec<(Arc<TrackLocalStaticRTP>, Packet, Arc<Activity>)> {
        self.sinks
            .lock()
            .iter_mut()
            .filter_map(|sink| {
                let copy = sink.consumer.forward(packet, now)?;
                Some((Arc::clone(&sink.track), copy, Arc::clone(&sink.activity)))
            })
            .collect()
    }
}

/// The forwarded-traffic counters of one kind (`audio`, `video`), looked up once per track
/// rather than per packet.
pub(crate) struct ForwardCounters {
    packets: prometheus::IntCounter,
    bytes: prometheus::IntCounter,
}

impl ForwardCounters {
    pub fn new(kind: &str) -> Self {
        Self {
            packets: metrics().room_forwarded_packets.with_label_values(&[kind]),
            bytes: metrics().room_forwarded_bytes.with_label_values(&[kind]),
        }
    }
}

/// What the room reads off a published track besides forwarding it.
pub(crate) struct Taps {
    /// The publisher's negotiated id of the RFC 6464 extension, read into the fanout's meter.
    pub audio_level: Option<u8>,
    /// The room pipeline's input mix: the track is decoded into it (audio only).
    pub mixer: Option<Arc<Mixer>>,
}

/// Reads a published track and copies each packet to its subscribers until the track or the
/// publisher's session ends; then reports `producer` on `ended`.
pub(crate) async fn forward_published(
    remote: Arc<TrackRemote>,
    fanout: Arc<Fanout>,
    publisher_activity: Arc<Activity>,
    producer: ProducerId,
    taps: Taps,
    ended: mpsc::WeakSender<super::room_actor::Command>,
    cancel: CancellationToken,
) {
    let Taps { audio_level, mixer } = taps;
    let mut decoder = match (&mixer, remote.kind()) {
        (Some(_), webrtc::rtp_transceiver::rtp_codec::RTPCodecType::Audio) => {
            OpusDecoder::new().ok()
        }
        _ => None,
    };
    let kind = match remote.kind() {
        webrtc::rtp_transceiver::rtp_codec::RTPCodecType::Video => "video",
        _ => "audio",
    };
    let counters = ForwardCounters::new(kind);
    loop {
        let packet = tokio::select! {
            read = remote.read_rtp() => match read {
                Ok((packet, _)) => packet,
                Err(_) => break,
            },
            () = cancel.cancelled() => break,
        };
        publisher_activity.touch();
        let level = audio_level
            .and_then(|id| packet.header.get_extension(id))
            .and_then(|payload| AudioLevel::parse(&payload));
        fanout.meter.record(level);
        if let (Some(decoder), Some(mixer)) = (decoder.as_mut(), &mixer) {
            match decoder.decode(&packet.payload) {
                Ok(samples) => mixer.push(producer, samples),
                Err(err) => tracing::debug!(%err, "room pipeline input: undecodable packet"),
            }
        }
        fanout.send(&packet, &counters).await;
    }
    if let Some(commands) = ended.upgrade() {
        let _ = commands
            .send(super::room_actor::Command::Unpublished { producer })
            .await;
    }
}

/// Where a forwarded line's keyframe requests go: the publisher's connection and the SSRC
/// of the track the line carries now (it changes when the line is recycled).
pub(crate) type KeyframeTarget = Arc<Mutex<Option<(Weak<RTCPeerConnection>, u32)>>>;

/// Reads a forwarded line's RTCP (the interceptors need it read); what the subscriber reports
/// counts as its media activity, so a participant that only listens stays alive. Its keyframe
/// requests (PLI, FIR) go to the publisher as a PLI, at most one per
/// [`KEYFRAME_REQUEST_INTERVAL`].
pub(crate) async fn read_forwarded_rtcp(
    sender: Arc<RTCRtpSender>,
    target: KeyframeTarget,
    activity: Arc<Activity>,
    cancel: CancellationToken,
) {
    let mut last_request: Option<Instant> = None;
    loop {
        let ssrc = sender_ssrc(&sender).await;
        let packets = tokio::select! {
            read = sender.read_rtcp() => match read {
                Ok((packets, _)) => packets,
                // A recycled line's renewed SSRC closed the streams this read was on.
                Err(_) if sender_ssrc(&sender).await != ssrc => continue,
                Err(_) => break,
            },
            () = cancel.cancelled() => break,
        };
        activity.touch();
        let wants_keyframe = packets.iter().any(|p| {
            let any = p.as_any();
            any.downcast_ref::<PictureLossIndication>().is_some()
                || any.downcast_ref::<FullIntraRequest>().is_some()
        });
        if !wants_keyframe
            || last_request.is_some_and(|at| at.elapsed() < KEYFRAME_REQUEST_INTERVAL)
        {
            continue;
        }
        let publisher = target.lock().clone();
        if let Some((pc, ssrc)) = publisher {
            last_request = Some(Instant::now());
            request_keyframe(&pc, ssrc).await;
        }
    }
}

/// The SSRC a forwarded line's sender sends with now.
async fn sender_ssrc(sender: &RTCRtpSender) -> Option<u32> {
    sender
        .get_parameters()
        .await
        .encodings
        .first()
        .map(|encoding| encoding.ssrc)
}

/// Asks a publisher for a keyframe of the track `ssrc` (a PLI).
pub(crate) async fn request_keyframe(pc: &Weak<RTCPeerConnection>, ssrc: u32) {
    let Some(pc) = pc.upgrade() else {
        return;
    };
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc: ssrc,
    };
    if let Err(err) = pc.write_rtcp(&[Box::new(pli)]).await {
        tracing::debug!(%err, "asking a publisher for a keyframe failed");
    }
}
