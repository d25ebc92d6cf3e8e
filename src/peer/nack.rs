//! Answers NACKs (RFC 4585 generic NACK) for the RTP the server sends: every outbound stream
//! that negotiated `nack` keeps a short [`SendBuffer`]; a NACK from the receiver resends the
//! packets still in it, as RTX (RFC 4588) when the receiver negotiated `video/rtx` for the
//! codec, otherwise as the same packet on the same SSRC.
//!
//! It replaces webrtc-rs 0.17's `ResponderInterceptor`, which has no RTX and whose buffer
//! loses packets when forwarded video is sent out of order (see [`SendBuffer`]).
//!
//! Resends of one peer connection share a budget of `--nack-bytes-per-second` (a second's
//! worth at once): a receiver that NACKs everything, again and again, would otherwise get the
//! whole send history resent at line rate for a few bytes of RTCP each. NACKed packets over
//! the budget are not resent, and counted.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use webrtc::interceptor::stream_info::StreamInfo;
use webrtc::interceptor::{
    Attributes, Interceptor, InterceptorBuilder, RTCPReader, RTCPWriter, RTPReader, RTPWriter,
};
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use webrtc::rtp::packet::Packet;
use webrtc::util::MarshalSize;

use super::metrics::metrics;
use super::send_buffer::{rtx_packet, SendBuffer, SEND_BUFFER_PACKETS};
use crate::metrics::{limit_hit, Limit};

type InterceptorResult<T> = Result<T, webrtc::interceptor::Error>;

/// Builds one [`NackResponder`] per peer connection.
pub(crate) struct NackResponderBuilder {
    /// `--nack-bytes-per-second`; 0: no limit.
    pub bytes_per_second: u32,
}

impl InterceptorBuilder for NackResponderBuilder {
    fn build(&self, _id: &str) -> InterceptorResult<Arc<dyn Interceptor + Send + Sync>> {
        Ok(Arc::new(NackResponder {
            streams: Arc::new(Streams {
                budget: NonZeroU32::new(self.bytes_per_second)
                    .map(|rate| RateLimiter::direct(Quota::per_second(rate))),
                media: Mutex::default(),
                rtx: Mutex::default(),
            }),
        }))
    }
}

/// The outbound streams of one peer connection, by SSRC.
struct NackResponder {
    streams: Arc<Streams>,
}

struct Streams {
    /// Bytes this peer connection may resend (a second's worth at once); `None`: no limit.
    budget: Option<DefaultDirectRateLimiter>,
    /// Streams that negotiated generic NACK, by their SSRC.
    media: Mutex<HashMap<u32, Arc<MediaStream>>>,
    /// RTX repair streams, by the SSRC of the stream they repair.
    rtx: Mutex<HashMap<u32, Arc<RtxStream>>>,
}

/// An outbound stream: what was sent, and where to send it again.
struct MediaStream {
    history: Mutex<SendBuffer>,
    /// The writer below this interceptor (towards SRTP), so a resend is not recorded again.
    next: Arc<dyn RTPWriter + Send + Sync>,
}

#[async_trait]
impl RTPWriter for MediaStream {
    async fn write(&self, packet: &Packet, attributes: &Attributes) -> InterceptorResult<usize> {
        self.history.lock().insert(packet);
        self.next.write(packet, attributes).await
    }
}

/// An RTX repair stream (its writer is only ever used here: webrtc-rs binds it for
/// interceptors and gives the application no handle to it).
struct RtxStream {
    ssrc: u32,
    payload_type: u8,
    /// The repair stream's own sequence numbers (RFC 4588 §4: independent of the original).
    next_sequence_number: AtomicU16,
    next: Arc<dyn RTPWriter + Send + Sync>,
}

/// Whether a stream negotiated generic NACK (`a=rtcp-fb:<pt> nack`, no parameter).
fn negotiated_nack(info: &StreamInfo) -> bool {
    info.rtcp_feedback
        .iter()
        .any(|fb| fb.typ == "nack" && fb.parameter.is_empty())
}

fn is_rtx(info: &StreamInfo) -> bool {
    info.mime_type
        .rsplit_once('/')
        .is_some_and(|(_, subtype)| subtype.eq_ignore_ascii_case("rtx"))
}

impl Streams {
    /// Resends what `nack` asks for that is still in the stream's history.
    async fn answer(&self, nack: &TransportLayerNack) {
        let Some(stream) = self.media.lock().get(&nack.media_ssrc).cloned() else {
            return;
        };
        let rtx = self.rtx.lock().get(&nack.media_ssrc).cloned();
        let requested: Vec<u16> = nack.nacks.iter().flat_map(|pair| *pair).collect();
        let found: Vec<Packet> = {
            let history = stream.history.lock();
            requested
                .iter()
                .filter_map(|&sequence_number| history.get(sequence_number).cloned())
                .collect()
        };
        let retransmissions = &metrics().retransmissions;
        retransmissions
            .with_label_values(&["not_buffered"])
            .inc_by((requested.len() - found.len()) as u64);
        let attributes = Attributes::new();
        let mut over_budget = 0;
        for packet in found {
            if !self.may_resend(packet.marshal_size() + if rtx.is_some() { 2 } else { 0 }) {
                over_budget += 1;
                continue;
            }
            let (result, kind) = match &rtx {
                Some(rtx) => {
                    let sequence_number = rtx.next_sequence_number.fetch_add(1, Ordering::Relaxed);
                    let repair = rtx_packet(&packet, rtx.ssrc, rtx.payload_type, sequence_number);
                    (rtx.next.write(&repair, &attributes).await, "rtx")
                }
                None => (stream.next.write(&packet, &attributes).await, "same_ssrc"),
            };
            match result {
                Ok(_) => retransmissions.with_label_values(&[kind]).inc(),
                Err(err) => tracing::debug!(%err, "retransmitting a NACKed packet failed"),
            }
        }
        if over_budget > 0 {
            tracing::debug!(
                over_budget,
                "NACKed packets over the resend budget; not resent"
            );
            limit_hit(Limit::NackBytesPerSecond, over_budget);
        }
    }

    /// Takes `bytes` from the resend budget, if it has them.
    fn may_resend(&self, bytes: usize) -> bool {
        let Some(budget) = &self.budget else {
            return true;
        };
        let bytes =
            NonZeroU32::new(u32::try_from(bytes).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        // A packet larger than a whole second's budget never fits: refused like the rest.
        matches!(budget.check_n(bytes), Ok(Ok(())))
    }
}

/// Passes RTCP up unchanged, answering the NACKs in it on the way.
struct NackReader {
    inner: Arc<dyn RTCPReader + Send + Sync>,
    streams: Arc<Streams>,
}

#[async_trait]
impl RTCPReader for NackReader {
    async fn read(
        &self,
        buf: &mut [u8],
        attributes: &Attributes,
    ) -> InterceptorResult<(
        Vec<Box<dyn webrtc::rtcp::packet::Packet + Send + Sync>>,
        Attributes,
    )> {
        let (packets, attributes) = self.inner.read(buf, attributes).await?;
        for packet in &packets {
            if let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() {
                self.streams.answer(nack).await;
            }
        }
        Ok((packets, attributes))
    }
}

#[async_trait]
impl Interceptor for NackResponder {
    async fn bind_rtcp_reader(
        &self,
        reader: Arc<dyn RTCPReader + Send + Sync>,
    ) -> Arc<dyn RTCPReader + Send + Sync> {
        Arc::new(NackReader {
            inner: reader,
            streams: Arc::clone(&self.streams),
        })
    }

    async fn bind_rtcp_writer(
        &self,
        writer: Arc<dyn RTCPWriter + Send + Sync>,
    ) -> Arc<dyn RTCPWriter + Send + Sync> {
        writer
    }

    async fn bind_local_stream(
        &self,
        info: &StreamInfo,
        writer: Arc<dyn RTPWriter + Send + Sync>,
    ) -> Arc<dyn RTPWriter + Send + Sync> {
        if let (true, Some(repaired)) = (is_rtx(info), &info.associated_stream) {
            let rtx = Arc::new(RtxStream {
                ssrc: info.ssrc,
                payload_type: info.payload_type,
                next_sequence_number: AtomicU16::new(rand::random()),
                next: Arc::clone(&writer),
            });
            self.streams.rtx.lock().insert(repaired.ssrc, rtx);
            return writer;
        }
        if !negotiated_nack(info) {
            return writer;
        }
        let stream = Arc::new(MediaStream {
            history: Mutex::new(SendBuffer::new(SEND_BUFFER_PACKETS)),
            next: writer,
        });
        self.streams
            .media
            .lock()
            .insert(info.ssrc, Arc::clone(&stream));
        stream
    }

    async fn unbind_local_stream(&self, info: &StreamInfo) {
        match &info.associated_stream {
            Some(repaired) if is_rtx(info) => {
                self.streams.rtx.lock().remove(&repaired.ssrc);
            }
            _ => {
                self.streams.media.lock().remove(&info.ssrc);
            }
        }
    }

    async fn bind_remote_stream(
        &self,
        _info: &StreamInfo,
        reader: Arc<dyn RTPReader + Send + Sync>,
    ) -> Arc<dyn RTPReader + Send + Sync> {
        reader
    }

    async fn unbind_remote_stream(&self, _info: &StreamInfo) {}

    async fn close(&self) -> InterceptorResult<()> {
        self.streams.media.lock().clear();
        self.streams.rtx.lock().clear();
        Ok(())
    }
}
