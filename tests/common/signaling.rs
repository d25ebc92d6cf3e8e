//! A gRPC signaling client for tests: send requests, read responses with timeouts.

use std::collections::HashMap;
use std::time::Duration;

use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp, web_rtc_signaling_client::WebRtcSignalingClient,
    SignalingRequest, SignalingResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use super::WAIT;

pub const SERVER: &str = "remotemedia-server";

/// One `Signal` stream.
pub struct SignalingClient {
    pub grpc: WebRtcSignalingClient<Channel>,
    outbound: Option<mpsc::Sender<SignalingRequest>>,
    inbound: Streaming<SignalingResponse>,
    next_id: u64,
}

impl SignalingClient {
    /// Opens a stream (nothing sent yet).
    pub async fn open(url: &str) -> Self {
        Self::open_with_token(url, None)
            .await
            .expect("open Signal stream")
    }

    /// Opens a stream with `authorization: Bearer <token>`; the status if the server refuses.
    pub async fn open_with_token(url: &str, token: Option<&str>) -> Result<Self, tonic::Status> {
        Self::open_with(url, token, &[]).await
    }

    /// Opens a stream whose call carries `metadata` (e.g. `traceparent`).
    pub async fn open_with_metadata(url: &str, metadata: &[(&'static str, &str)]) -> Self {
        Self::open_with(url, None, metadata)
            .await
            .expect("open Signal stream")
    }

    /// Opens a stream with an optional bearer token and extra metadata.
    pub async fn open_with(
        url: &str,
        token: Option<&str>,
        metadata: &[(&'static str, &str)],
    ) -> Result<Self, tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .expect("signaling URL")
            .connect()
            .await
            .expect("connect to signaling");
        Self::open_on(channel, token, metadata).await
    }

    /// Opens a stream on an established channel (e.g. TLS with a test CA).
    pub async fn open_on(
        channel: Channel,
        token: Option<&str>,
        metadata: &[(&'static str, &str)],
    ) -> Result<Self, tonic::Status> {
        let mut grpc = WebRtcSignalingClient::new(channel);
        let (outbound, rx) = mpsc::channel(64);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("metadata value"),
            );
        }
        for (key, value) in metadata {
            request
                .metadata_mut()
                .insert(*key, value.parse().expect("ASCII metadata"));
        }
        let inbound = grpc.signal(request).await?.into_inner();
        Ok(Self {
            grpc,
            outbound: Some(outbound),
            inbound,
            next_id: 0,
        })
    }

    /// Opens a stream and announces `peer_id`; returns the client and the ack's JSON.
    pub async fn announce(url: &str, peer_id: &str) -> (Self, serde_json::Value) {
        Self::announce_with(url, peer_id, HashMap::from([("test".into(), "yes".into())])).await
    }

    /// Announces with the given metadata (e.g. `manifest`).
    pub async fn announce_with(
        url: &str,
        peer_id: &str,
        metadata: HashMap<String, String>,
    ) -> (Self, serde_json::Value) {
        let client = Self::open(url).await;
        client.announce_as(peer_id, metadata).await
    }

    /// Announces `peer_id` on this (just opened) stream; returns the client and the ack.
    pub async fn announce_as(
        mut self,
        peer_id: &str,
        metadata: HashMap<String, String>,
    ) -> (Self, serde_json::Value) {
        let client = &mut self;
        let id = client
            .send(Req::Announce(pb::AnnounceRequest {
                peer_id: peer_id.into(),
                capabilities: Some(pb::PeerCapabilities {
                    audio: true,
                    video: false,
                    data: true,
                    extensions: String::new(),
                }),
                metadata,
            }))
            .await;
        let ack = client.expect_ack(&id).await;
        (self, ack)
    }

    /// Sends a request; returns its request id.
    pub async fn send(&mut self, request: Req) -> String {
        self.next_id += 1;
        let request_id = format!("r{}", self.next_id);
        self.send_raw(SignalingRequest {
            request_id: request_id.clone(),
            request: Some(request),
        })
        .await;
        request_id
    }

    /// Sends an SDP offer to `to`; returns its request id.
    pub async fn offer(&mut self, to: &str, sdp: impl Into<String>) -> String {
        self.send(Req::Offer(pb::OfferRequest {
            to_peer_id: to.into(),
            sdp: sdp.into(),
            r#type: "offer".into(),
        }))
        .await
    }

    /// Answers a server offer (`offer_id`: the pending offer's, or `None` for whichever);
    /// returns the request id.
    pub async fn answer_server(&mut self, sdp: String, offer_id: Option<String>) -> String {
        self.send(Req::Answer(pb::AnswerRequest {
            to_peer_id: SERVER.into(),
            sdp,
            r#type: "answer".into(),
            offer_id,
        }))
        .await
    }

    /// Trickles a local candidate of a webrtc-crate peer to `to` (`None`: end of candidates).
    pub async fn candidate(
        &mut self,
        to: &str,
        candidate: Option<webrtc::ice_transport::ice_candidate::RTCIceCandidateInit>,
    ) -> String {
        let init = candidate.unwrap_or_default();
        self.send(Req::IceCandidate(pb::IceCandidateRequest {
            to_peer_id: to.into(),
            candidate: init.candidate,
            sdp_mid: init.sdp_mid.unwrap_or_default(),
            sdp_mline_index: u32::from(init.sdp_mline_index.unwrap_or(0)),
        }))
        .await
    }

    pub async fn send_raw(&mut self, request: SignalingRequest) {
        self.outbound
            .as_ref()
            .expect("stream still open")
            .send(request)
            .await
            .expect("send request");
    }

    /// Sends `request` unless the server already ended the stream (then false).
    pub async fn try_send_raw(&mut self, request: SignalingRequest) -> bool {
        match self.outbound.as_ref() {
            Some(outbound) => outbound.send(request).await.is_ok(),
            None => false,
        }
    }

    /// Half-closes the stream (a clean leave).
    pub fn close(&mut self) {
        self.outbound = None;
    }

    /// The next response, or the status that ended the stream.
    pub async fn next(&mut self) -> Result<Option<SignalingResponse>, tonic::Status> {
        tokio::time::timeout(WAIT, self.inbound.message())
            .await
            .expect("timed out waiting for a signaling response")
    }

    /// Leaves as a well-behaved client does: half-closes, then reads until the server ends
    /// the stream (dropping the connection right after the half-close may lose it, and the
    /// server then sees a broken stream: a resume grace instead of a leave).
    pub async fn leave(mut self) {
        self.close();
        while let Ok(Ok(Some(_))) = tokio::time::timeout(WAIT, self.inbound.message()).await {}
    }

    /// The next response within `within`; `None` when nothing came.
    pub async fn next_within(
        &mut self,
        within: Duration,
    ) -> Option<Result<Option<SignalingResponse>, tonic::Status>> {
        tokio::time::timeout(within, self.inbound.message())
            .await
            .ok()
    }

    /// The next response; panics if the stream ended.
    pub async fn recv(&mut self) -> SignalingResponse {
        self.next()
            .await
            .expect("stream failed")
            .expect("stream ended")
    }

    /// Reads until a response satisfies `pick`; returns what it picked and what it skipped.
    pub async fn recv_until<T>(
        &mut self,
        mut pick: impl FnMut(&SignalingResponse) -> Option<T>,
    ) -> (T, Vec<SignalingResponse>) {
        let mut skipped = Vec::new();
        loop {
            let response = self.recv().await;
            if let Some(found) = pick(&response) {
                return (found, skipped);
            }
            skipped.push(response);
        }
    }

    /// Waits for the ack of `request_id` and returns its JSON; panics on an error response.
    pub async fn expect_ack(&mut self, request_id: &str) -> serde_json::Value {
        let (ack, _) = self
            .recv_until(|r| match &r.response {
                Some(Resp::Ack(ack)) if r.request_id == request_id => Some(ack.data.clone()),
                Some(Resp::Error(err)) if r.request_id == request_id => {
                    panic!("request {request_id} failed: {err:?}")
                }
                _ => None,
            })
            .await;
        serde_json::from_str(&ack).expect("ack data is JSON")
    }

    /// Waits for the error response of `request_id`.
    pub async fn expect_error(&mut self, request_id: &str) -> pb::ErrorResponse {
        let (error, _) = self
            .recv_until(|r| match &r.response {
                Some(Resp::Error(err)) if r.request_id == request_id => Some(err.clone()),
                Some(Resp::Ack(ack)) if r.request_id == request_id => {
                    panic!("request {request_id} unexpectedly succeeded: {ack:?}")
                }
                _ => None,
            })
            .await;
        error
    }

    /// Waits for a notification `pick` accepts.
    pub async fn expect_notification<T>(
        &mut self,
        mut pick: impl FnMut(&Notification) -> Option<T>,
    ) -> T {
        self.recv_until(|r| match &r.response {
            Some(Resp::Notification(pb::SignalingNotification {
                notification: Some(n),
            })) => pick(n),
            _ => None,
        })
        .await
        .0
    }

    /// The status the server ended the stream with.
    pub async fn expect_status(&mut self) -> tonic::Status {
        loop {
            match self.next().await {
                Err(status) => return status,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without a status"),
            }
        }
    }

    pub async fn health(&mut self) -> pb::HealthCheckResponse {
        self.grpc
            .health_check(pb::HealthCheckRequest {})
            .await
            .expect("health check")
            .into_inner()
    }
}

/// The JSON `metrics` of a health check.
pub fn health_metrics(health: &pb::HealthCheckResponse) -> serde_json::Value {
    serde_json::from_str(&health.metrics).expect("metrics JSON")
}

pub async fn health(url: &str) -> pb::HealthCheckResponse {
    let mut grpc = WebRtcSignalingClient::connect(url.to_owned())
        .await
        .expect("connect");
    grpc.health_check(pb::HealthCheckRequest {})
        .await
        .expect("health check")
        .into_inner()
}

pub const SHORT: Duration = Duration::from_millis(300);

/// Candidate `i` of a numbered series (its port carries the number), to check order.
fn numbered_candidate(i: u16) -> webrtc::ice_transport::ice_candidate::RTCIceCandidateInit {
    webrtc::ice_transport::ice_candidate::RTCIceCandidateInit {
        candidate: format!(
            "candidate:{i} 1 udp 2130706431 127.0.0.1 {} typ host",
            10_000 + i
        ),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    }
}

/// Sends `n` numbered ICE candidates from `from` to `to`, each acknowledged.
pub async fn send_numbered_candidates(from: &mut SignalingClient, to: &str, n: u16) {
    for i in 0..n {
        let request = from.candidate(to, Some(numbered_candidate(i))).await;
        from.expect_ack(&request).await;
    }
}

/// Receives `n` numbered ICE candidates from `from` and checks they are 0..n in order.
pub async fn expect_numbered_candidates(to: &mut SignalingClient, from: &str, n: u16) {
    for i in 0..n {
        let candidate = to
            .expect_notification(|n| match n {
                Notification::IceCandidate(c) if c.from_peer_id == from => Some(c.clone()),
                _ => None,
            })
            .await;
        assert_eq!(
            candidate.candidate,
            numbered_candidate(i).candidate,
            "notification {i} of {n} out of order or missing"
        );
    }
}

/// Notifications that reach `client` within `quiet` (then it is drained).
pub async fn drain_notifications(
    client: &mut SignalingClient,
    quiet: std::time::Duration,
) -> Vec<Notification> {
    let mut seen = Vec::new();
    while let Ok(Ok(Some(response))) = tokio::time::timeout(quiet, client.inbound.message()).await {
        if let Some(Resp::Notification(pb::SignalingNotification {
            notification: Some(n),
        })) = response.response
        {
            seen.push(n);
        }
    }
    seen
}
