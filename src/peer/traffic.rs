//! Live traffic counters: RTP packets, bytes and jitter-buffer events count into the process
//! metrics as media flows, so `rate()` moves during a call, not only when it ends. Each update
//! is an atomic add on a counter resolved once (no label lookup, no stats walk per scrape).

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use parking_lot::Mutex;
use prometheus::IntCounter;
use webrtc::interceptor::stream_info::StreamInfo;
use webrtc::interceptor::{
    Attributes, Interceptor, InterceptorBuilder, RTCPReader, RTCPWriter, RTPReader, RTPWriter,
};
use webrtc::rtp::packet::Packet;
use webrtc::util::MarshalSize;

use super::metrics::metrics;
use crate::media::JitterStats;

type InterceptorResult<T> = Result<T, webrtc::interceptor::Error>;

/// The process counters, resolved once.
struct Live {
    audio_packets_in: IntCounter,
    audio_packets_out: IntCounter,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    /// `lost`, `late`, `duplicate`, `concealed`, `fec_recovered`, `discarded`.
    events: [IntCounter; 6],
}

fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(|| {
        let m = metrics();
        let event = |name: &str| m.jitter_events.with_label_values(&[name]);
        Live {
            audio_packets_in: m.rtp_packets.with_label_values(&["in"]),
            audio_packets_out: m.rtp_packets.with_label_values(&["out"]),
            bytes_in: m.rtp_bytes.with_label_values(&["in"]),
            bytes_out: m.rtp_bytes.with_label_values(&["out"]),
            events: [
                event("lost"),
                event("late"),
                event("duplicate"),
                event("concealed"),
                event("fec_recovered"),
                event("discarded"),
            ],
        }
    })
}

/// One audio packet written to a client.
pub(crate) fn audio_packet_sent() {
    live().audio_packets_out.inc();
}

/// What of one session's jitter-buffer counters the process metrics already hold.
#[derive(Default)]
pub(crate) struct JitterCounted {
    /// `received`, then the six events in [`Live::events`] order.
    counted: Mutex<[u64; 7]>,
}

impl JitterCounted {
    /// Adds what grew since the last snapshot (a figure that shrinks, as RFC 3550 loss does
    /// when a late packet arrives, adds nothing until it passes its peak again).
    pub(crate) fn add(&self, stats: &JitterStats) {
        let now = [
            stats.received,
            stats.lost,
            stats.late,
            stats.duplicate,
            stats.concealed,
            stats.fec_recovered,
            stats.discarded,
        ];
        let live = live();
        let mut counted = self.counted.lock();
        for (i, (seen, value)) in counted.iter_mut().zip(now).enumerate() {
            if value > *seen {
                let counter = match i {
                    0 => &live.audio_packets_in,
                    n => &live.events[n - 1],
                };
                counter.inc_by(value - *seen);
                *seen = value;
            }
        }
    }
}

fn packet_bytes(packet: &Packet) -> u64 {
    (packet.header.marshal_size() + packet.payload.len()) as u64
}

/// Counts every RTP packet's bytes (header included, all tracks, retransmissions too) where
/// it leaves for, or arrives from, SRTP. Registered first: the innermost interceptor.
pub(crate) struct TrafficCounterBuilder;

impl InterceptorBuilder for TrafficCounterBuilder {
    fn build(&self, _id: &str) -> InterceptorResult<Arc<dyn Interceptor + Send + Sync>> {
        Ok(Arc::new(TrafficCounter))
    }
}

struct TrafficCounter;

struct CountingWriter(Arc<dyn RTPWriter + Send + Sync>);

#[async_trait]
impl RTPWriter for CountingWriter {
    async fn write(&self, packet: &Packet, attributes: &Attributes) -> InterceptorResult<usize> {
        let written = self.0.write(packet, attributes).await?;
        live().bytes_out.inc_by(packet_bytes(packet));
        Ok(written)
    }
}

struct CountingReader(Arc<dyn RTPReader + Send + Sync>);

#[async_trait]
impl RTPReader for CountingReader {
    async fn read(
        &self,
        buf: &mut [u8],
        attributes: &Attributes,
    ) -> InterceptorResult<(Packet, Attributes)> {
        let (packet, attributes) = self.0.read(buf, attributes).await?;
        live().bytes_in.inc_by(packet_bytes(&packet));
        Ok((packet, attributes))
    }
}

#[async_trait]
impl Interceptor for TrafficCounter {
    async fn bind_rtcp_reader(
        &self,
        reader: Arc<dyn RTCPReader + Send + Sync>,
    ) -> Arc<dyn RTCPReader + Send + Sync> {
        reader
    }

    async fn bind_rtcp_writer(
        &self,
        writer: Arc<dyn RTCPWriter + Send + Sync>,
    ) -> Arc<dyn RTCPWriter + Send + Sync> {
        writer
    }

    async fn bind_local_stream(
        &self,
        _info: &StreamInfo,
        writer: Arc<dyn RTPWriter + Send + Sync>,
    ) -> Arc<dyn RTPWriter + Send + Sync> {
        Arc::new(CountingWriter(writer))
    }

    async fn unbind_local_stream(&self, _info: &StreamInfo) {}

    async fn bind_remote_stream(
        &self,
        _info: &StreamInfo,
        reader: Arc<dyn RTPReader + Send + Sync>,
    ) -> Arc<dyn RTPReader + Send + Sync> {
        Arc::new(CountingReader(reader))
    }

    async fn unbind_remote_stream(&self, _info: &StreamInfo) {}

    async fn close(&self) -> InterceptorResult<()> {
        Ok(())
    }
}
