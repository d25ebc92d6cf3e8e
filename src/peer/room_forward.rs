//! A room's packet path: one published track read once and copied to each subscriber's
//! forwarded line (LiveKit's receiver and *DownTracks*). The room decides who gets what; this
//! only applies it, one [`Consumer`] (SSRC, sequence numbers, timestamps, header extensions)
//! per subscriber.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use webrtc::rtcp::receiver_report::ReceiverReport;
use webrtc::rtcp::sender_report::SenderReport;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_remote::TrackRemote;
use webrtc::util::Marshal;

use super::activity::Activity;
use super::metrics::metrics;
use super::room_pipeline::Mixer;
use super::room_relay_link::RelayTap;
use super::video::KEYFRAME_REQUEST_INTERVAL;
use crate::media::OpusDecoder;
use crate::room::{AudioLevel, Consumer, ParticipantId, ProducerId, Vp8Descriptor};

/// One subscriber's copy of a published track.
pub(crate) struct Sink {
    pub subscriber: ParticipantId,
    /// The subscriber's forwarded line (its sender's track).
    pub track: Arc<TrackLocalStaticRTP>,
    pub consumer: Consumer,
    /// The subscriber's media activity: forwarding to it counts.
    pub activity: Arc<Activity>,
    /// The simulcast layer (source SSRC) a requested switch waits for: counted as a layer
    /// switch when the copy starts carrying it.
    pub switching: Option<u32>,
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
    pub fn record(&self, level: Option<AudioLevel>) {
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

/// What arrived on one simulcast layer since the room last looked: bytes (its bitrate) and
/// the height of its latest VP8 keyframe (0: none since).
#[derive(Default)]
pub(crate) struct LayerMeter {
    bytes: AtomicU64,
    height: AtomicU32,
}

impl LayerMeter {
    pub fn record(&self, packet: &Packet, vp8: bool) {
        // The payload and the fixed header: what a layer costs a subscriber's path.
        let size = 12 + packet.payload.len();
        self.bytes.fetch_add(size as u64, Ordering::Relaxed);
        if !vp8 {
            return;
        }
        let height = Vp8Descriptor::parse(&packet.payload)
            .and_then(|d| d.keyframe_size(&packet.payload))
            .map(|(_, height)| height);
        if let Some(height) = height.filter(|h| *h > 0) {
            self.height.store(u32::from(height), Ordering::Relaxed);
        }
    }

    /// Bytes since the previous sample, and the latest keyframe height if one came.
    pub fn sample(&self) -> (u64, Option<u32>) {
        let bytes = self.bytes.swap(0, Ordering::Relaxed);
        let height = self.height.swap(0, Ordering::Relaxed);
        (bytes, (height > 0).then_some(height))
    }
}

/// The subscribers of one published track. Locked per packet only to rewrite headers, never
/// across a write.
#[derive(Default)]
pub(crate) struct Fanout {
    sinks: Mutex<Vec<Sink>>,
    /// The other workers of the room that get the track (one copy each, untouched but for
    /// its SSRC; they fan out to their subscribers).
    relays: Mutex<Vec<RelayTap>>,
    /// A simulcast track's layers by source SSRC: (SSRC, index in its announced layers).
    /// Empty for a single stream.
    layers: Mutex<Vec<(u32, u8)>>,
    pub meter: Meter,
}

impl Fanout {
    /// Relays the track on a link too (replacing that link's tap).
    pub fn add_relay(&self, tap: RelayTap) {
        let mut relays = self.relays.lock();
        relays.retain(|r| r.link != tap.link);
        relays.push(tap);
    }

    /// Stops relaying the track on the link.
    pub fn remove_relay(&self, link: &(String, u32)) {
        self.relays.lock().retain(|r| &r.link != link);
    }

    /// The simulcast layer whose packets come with source `ssrc` is the track's `layer`th
    /// (as announced): relayed copies of it carry that layer's relay SSRC.
    pub fn set_layer(&self, ssrc: u32, layer: usize) {
        let Ok(layer) = u8::try_from(layer) else {
            return;
        };
        let mut layers = self.layers.lock();
        layers.retain(|(s, _)| *s != ssrc);
        layers.push((ssrc, layer));
    }

    /// The relayed layer of a packet from source `ssrc`: 0 for a single stream; `None` for a
    /// simulcast source not known (yet) or past what a relay SSRC can tell.
    fn relayed_layer(&self, ssrc: u32) -> Option<u8> {
        let layers = self.layers.lock();
        if layers.is_empty() {
            return Some(0);
        }
        layers
            .iter()
            .find(|(s, _)| *s == ssrc)
            .map(|(_, layer)| *layer)
            .filter(|layer| usize::from(*layer) < crate::room_relay::MAX_RELAYED_LAYERS)
    }

    /// Hands `packet` to each link that relays the track (of a simulcast track, each link
    /// that wants the packet's layer); a link that falls behind loses it (counted).
    fn relay(&self, packet: &Packet) {
        let relays = self.relays.lock();
        let Some(first) = relays.first() else {
            return;
        };
        let Some(layer) = self.relayed_layer(packet.header.ssrc) else {
            return;
        };
        let relay = crate::room_relay::metrics::metrics();
        let mut bytes = None;
        for tap in relays.iter().filter(|tap| tap.wants(layer)) {
            let bytes = match &bytes {
                Some(bytes) => bytes,
                None => {
                    let mut copy = packet.clone();
                    copy.header.ssrc =
                        crate::room_relay::relay_layer_ssrc(first.producer, usize::from(layer));
                    let Ok(marshalled) = copy.marshal() else {
                        return;
                    };
                    bytes.insert(marshalled)
                }
            };
            match tap.queue.try_send(bytes.clone()) {
                Ok(()) => relay.layer_packets(layer).inc(),
                Err(_) => relay.dropped.with_label_values(&["send_queue_full"]).inc(),
            }
        }
    }

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

    /// Switches `subscriber`'s copy to the simulcast layer of source `ssrc` at its next
    /// keyframe; `count`: a switch (not the first layer), counted when it happens.
    pub fn switch_layer(&self, subscriber: &ParticipantId, ssrc: u32, count: bool) {
        if let Some(sink) = self
            .sinks
            .lock()
            .iter_mut()
            .find(|s| &s.subscriber == subscriber)
        {
            sink.consumer.rtp().switch_to(ssrc);
            let pending = sink.consumer.rtp().current_source() != Some(ssrc);
            sink.switching = (count && pending).then_some(ssrc);
        }
    }

    /// The source SSRC `subscriber`'s copy carries now (a simulcast layer's) and whether it
    /// is paused; `None` when it gets no copy.
    pub fn layer_state(&self, subscriber: &ParticipantId) -> Option<(Option<u32>, bool)> {
        self.sinks
            .lock()
            .iter_mut()
            .find(|s| &s.subscriber == subscriber)
            .map(|s| {
                (
                    s.consumer.rtp().current_source(),
                    s.consumer.rtp().is_paused(),
                )
            })
    }

    /// Writes each subscriber's copy of `packet`; a copy that left counts as the subscriber's
    /// media activity and in `counters`.
    pub async fn send(&self, packet: &Packet, counters: &ForwardCounters) {
        self.relay(packet);
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
                if sink.switching.is_some()
                    && sink.switching == sink.consumer.rtp().current_source()
                {
                    sink.switching = None;
                    metrics().room_layer_switches.inc();
                }
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
    /// A simulcast layer's meter (its bitrate and keyframe heights); `vp8`: read heights.
    pub layer: Option<(Arc<LayerMeter>, bool)>,
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
    let Taps {
        audio_level,
        mixer,
        layer,
    } = taps;
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
        if let Some((meter, vp8)) = &layer {
            meter.record(&packet, *vp8);
        }
        // Decoded only while the room pipeline runs here (a spanning room's lead).
        let mixing = mixer.as_ref().filter(|mixer| mixer.is_active());
        if let (Some(decoder), Some(mixer)) = (decoder.as_mut(), mixing) {
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

/// Where a forwarded line's keyframe requests go: the publisher's route and the SSRC of the
/// track the line carries now (it changes when the line is recycled).
pub(crate) type KeyframeTarget = Arc<Mutex<Option<(KeyframeRoute, u32)>>>;

/// How a keyframe request reaches a track's publisher.
#[derive(Clone)]
pub(crate) enum KeyframeRoute {
    /// Its connection here (held weakly: it owns the lines that ask).
    Publisher(Weak<RTCPeerConnection>),
    /// Another worker of the room (#16): the room sends the request back over the link of
    /// its remote producer `producer` (`room_relay_keyframes.rs`); the SSRC is a relay SSRC.
    Relay {
        commands: mpsc::WeakSender<super::room_actor::Command>,
        producer: ProducerId,
    },
}

/// Where a forwarded line's reception reports go: the room, as the subscriber's
/// [`Command::LineFeedback`](super::room_actor::Command::LineFeedback) for the line's layer
/// choice.
pub(crate) struct FeedbackTarget {
    /// Whether the line carries a simulcast track now (other lines' reports are not sent).
    pub enabled: Arc<std::sync::atomic::AtomicBool>,
    pub commands: mpsc::WeakSender<super::room_actor::Command>,
    pub peer: ParticipantId,
    pub session: u64,
    /// The line's index among the subscriber's forwarded lines.
    pub line: usize,
}

/// Reads a forwarded line's RTCP (the interceptors need it read); what the subscriber reports
/// counts as its media activity, so a participant that only listens stays alive. Its keyframe
/// requests (PLI, FIR) go to the publisher as a PLI, at most one per
/// [`KEYFRAME_REQUEST_INTERVAL`]. Its receiver reports' loss for the line and its REMB go to
/// the room (dropped when the room is busy: the next report follows within a second).
pub(crate) async fn read_forwarded_rtcp(
    sender: Arc<RTCRtpSender>,
    target: KeyframeTarget,
    activity: Arc<Activity>,
    feedback: FeedbackTarget,
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
        let (fraction_lost, remb_bps) = match feedback.enabled.load(Ordering::Relaxed) {
            true => reception(&packets, ssrc),
            false => (None, None),
        };
        if fraction_lost.is_some() || remb_bps.is_some() {
            if let Some(commands) = feedback.commands.upgrade() {
                let _ = commands.try_send(super::room_actor::Command::LineFeedback {
                    peer: feedback.peer.clone(),
                    session: feedback.session,
                    line: feedback.line,
                    fraction_lost,
                    remb_bps,
                });
            }
        }
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

/// The worst loss reported for the stream `ssrc` (RFC 3550 fraction lost, in 1/256) and the
/// lowest REMB, in a compound RTCP packet.
fn reception(
    packets: &[Box<dyn webrtc::rtcp::packet::Packet + Send + Sync>],
    ssrc: Option<u32>,
) -> (Option<u8>, Option<u64>) {
    let mut fraction_lost: Option<u8> = None;
    let mut remb: Option<u64> = None;
    for packet in packets {
        let any = packet.as_any();
        let reports = if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            &rr.reports[..]
        } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
            &sr.reports[..]
        } else {
            if let Some(estimate) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                // A float from the network: NaN and negatives are ignored, huge values
                // saturate.
                if estimate.bitrate.is_finite() && estimate.bitrate >= 0.0 {
                    let bps = estimate.bitrate as u64;
                    remb = Some(remb.map_or(bps, |r| r.min(bps)));
                }
            }
            continue;
        };
        for report in reports.iter().filter(|r| Some(r.ssrc) == ssrc) {
            fraction_lost =
                Some(fraction_lost.map_or(report.fraction_lost, |f| f.max(report.fraction_lost)));
        }
    }
    (fraction_lost, remb)
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

/// Asks a publisher for a keyframe of the track `ssrc` (a PLI), here or over the relay (a
/// full room queue drops it: the asking side asks again).
pub(crate) async fn request_keyframe(route: &KeyframeRoute, ssrc: u32) {
    let pc = match route {
        KeyframeRoute::Publisher(pc) => pc,
        KeyframeRoute::Relay { commands, producer } => {
            if let Some(commands) = commands.upgrade() {
                let _ = commands.try_send(super::room_actor::Command::RelayKeyframe {
                    producer: *producer,
                    ssrc,
                });
            }
            return;
        }
    };
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

#[cfg(test)]
mod tests {
    use webrtc::rtcp::packet::Packet as Rtcp;
    use webrtc::rtcp::reception_report::ReceptionReport;

    use super::*;

    fn block(ssrc: u32, fraction_lost: u8) -> ReceptionReport {
        ReceptionReport {
            ssrc,
            fraction_lost,
            ..Default::default()
        }
    }

    #[test]
    fn reception_reads_the_lines_loss_and_the_lowest_remb() {
        let packets: Vec<Box<dyn Rtcp + Send + Sync>> = vec![
            Box::new(ReceiverReport {
                ssrc: 1,
                reports: vec![block(7, 20), block(8, 200)],
                ..Default::default()
            }),
            Box::new(SenderReport {
                ssrc: 1,
                reports: vec![block(7, 60)],
                ..Default::default()
            }),
            Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 1,
                bitrate: 800_000.0,
                ssrcs: vec![7],
            }),
            Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 1,
                bitrate: f32::NAN,
                ssrcs: vec![7],
            }),
        ];
        assert_eq!(
            reception(&packets, Some(7)),
            (Some(60), Some(800_000)),
            "the worst block of this line; a NaN REMB is ignored"
        );
        assert_eq!(
            reception(&packets[..1], Some(9)),
            (None, None),
            "another stream's blocks are not this line's"
        );
    }
}
