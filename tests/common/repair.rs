//! What a webrtc-rs client receives on RTX repair streams. webrtc-rs 0.17 binds a repair
//! stream (`a=ssrc-group:FID`) and reads it only so that its interceptors see the packets;
//! it never hands them to the track. A recording interceptor in the client's chain keeps
//! them for the test.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use webrtc::interceptor::stream_info::StreamInfo;
use webrtc::interceptor::{
    Attributes, Interceptor, InterceptorBuilder, RTCPReader, RTCPWriter, RTPReader, RTPWriter,
};
use webrtc::rtp::packet::Packet;

use super::client::ReceivedRtp;

/// Records what arrives on RTX repair streams (remote streams associated with another).
pub struct RepairRecorder {
    pub packets: Arc<Mutex<Vec<ReceivedRtp>>>,
}

impl InterceptorBuilder for RepairRecorder {
    fn build(
        &self,
        _id: &str,
    ) -> Result<Arc<dyn Interceptor + Send + Sync>, webrtc::interceptor::Error> {
        Ok(Arc::new(RepairRecorder {
            packets: Arc::clone(&self.packets),
        }))
    }
}

struct RecordingReader {
    inner: Arc<dyn RTPReader + Send + Sync>,
    packets: Arc<Mutex<Vec<ReceivedRtp>>>,
}

#[async_trait::async_trait]
impl RTPReader for RecordingReader {
    async fn read(
        &self,
        buf: &mut [u8],
        attributes: &Attributes,
    ) -> Result<(Packet, Attributes), webrtc::interceptor::Error> {
        let (packet, attributes) = self.inner.read(buf, attributes).await?;
        self.packets.lock().push(ReceivedRtp {
            at: Instant::now(),
            packet: packet.clone(),
            stream: String::new(),
        });
        Ok((packet, attributes))
    }
}

#[async_trait::async_trait]
impl Interceptor for RepairRecorder {
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
        writer
    }

    async fn unbind_local_stream(&self, _info: &StreamInfo) {}

    async fn bind_remote_stream(
        &self,
        info: &StreamInfo,
        reader: Arc<dyn RTPReader + Send + Sync>,
    ) -> Arc<dyn RTPReader + Send + Sync> {
        if info.associated_stream.is_none() {
            return reader;
        }
        Arc::new(RecordingReader {
            inner: reader,
            packets: Arc::clone(&self.packets),
        })
    }

    async fn unbind_remote_stream(&self, _info: &StreamInfo) {}

    async fn close(&self) -> Result<(), webrtc::interceptor::Error> {
        Ok(())
    }
}
