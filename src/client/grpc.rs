//! Connecting a load peer through our gRPC signaling: announce, offer to the virtual peer
//! `remotemedia-server`, trickle candidates both ways until connected.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use super::error::ClientError;
use super::peer::LoadPeer;
use super::SetupTimes;
use crate::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp, web_rtc_signaling_client::WebRtcSignalingClient,
    SignalingRequest, SignalingResponse,
};
use crate::signaling::SERVER_PEER_ID;

/// How long a peer may take from announce to connected.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a leaving peer waits for the server to end its stream.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A peer's open signaling stream, kept until the peer leaves.
pub struct GrpcSession {
    outbound: Option<mpsc::Sender<SignalingRequest>>,
    /// Reads (and drops) what the server sends after setup, until it ends the stream.
    reader: JoinHandle<()>,
}

impl GrpcSession {
    /// Leaves as a well-behaved client does: half-closes and waits for the server to end
    /// the stream.
    pub async fn leave(mut self) {
        self.outbound = None;
        if tokio::time::timeout(LEAVE_TIMEOUT, &mut self.reader)
            .await
            .is_err()
        {
            self.reader.abort();
        }
    }
}

struct Stream {
    outbound: mpsc::Sender<SignalingRequest>,
    inbound: Streaming<SignalingResponse>,
    next_id: u64,
}

impl Stream {
    async fn send(&mut self, request: Req) -> Result<String, ClientError> {
        self.next_id += 1;
        let request_id = format!("r{}", self.next_id);
        self.outbound
            .send(SignalingRequest {
                request_id: request_id.clone(),
                request: Some(request),
            })
            .await
            .map_err(|_| ClientError::Signaling("the stream closed".into()))?;
        Ok(request_id)
    }

    async fn next(&mut self) -> Result<SignalingResponse, ClientError> {
        self.inbound
            .message()
            .await?
            .ok_or_else(|| ClientError::Signaling("the server ended the stream".into()))
    }
}

/// Announces `peer_id` on a new stream of `channel` and connects `peer` to the server.
///
/// # Errors
/// Signaling failures, an error response, a WebRTC failure or [`ClientError::Timeout`].
pub async fn connect(
    channel: Channel,
    peer_id: &str,
    manifest: Option<&str>,
    token: Option<&str>,
    peer: &mut LoadPeer,
) -> Result<(GrpcSession, SetupTimes), ClientError> {
    tokio::time::timeout(
        SETUP_TIMEOUT,
        setup(channel, peer_id, manifest, token, peer),
    )
    .await
    .map_err(|_| ClientError::Timeout("announce to connected"))?
}

async fn setup(
    channel: Channel,
    peer_id: &str,
    manifest: Option<&str>,
    token: Option<&str>,
    peer: &mut LoadPeer,
) -> Result<(GrpcSession, SetupTimes), ClientError> {
    let mut grpc = WebRtcSignalingClient::new(channel);
    let (outbound, rx) = mpsc::channel(16);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::Signaling("the token is not a valid header value".into()))?;
        request.metadata_mut().insert("authorization", value);
    }
    let inbound = grpc.signal(request).await?.into_inner();
    let mut stream = Stream {
        outbound,
        inbound,
        next_id: 0,
    };
    let metadata: HashMap<String, String> = manifest
        .map(|m| HashMap::from([("manifest".to_owned(), m.to_owned())]))
        .unwrap_or_default();
    let announce = stream
        .send(Req::Announce(pb::AnnounceRequest {
            peer_id: peer_id.into(),
            capabilities: Some(pb::PeerCapabilities {
                audio: true,
                video: false,
                data: false,
                extensions: String::new(),
            }),
            metadata,
        }))
        .await?;
    loop {
        let response = stream.next().await?;
        if response.request_id != announce {
            continue;
        }
        match response.response {
            Some(Resp::Ack(_)) => break,
            Some(Resp::Error(err)) => {
                return Err(ClientError::Signaling(format!("announce: {}", err.message)))
            }
            _ => {}
        }
    }

    let sdp = peer.offer(false).await?;
    let started = Instant::now();
    stream
        .send(Req::Offer(pb::OfferRequest {
            to_peer_id: SERVER_PEER_ID.into(),
            sdp,
            r#type: "offer".into(),
        }))
        .await?;
    let mut answer = None;
    let mut connected = None;
    while answer.is_none() || connected.is_none() {
        tokio::select! {
            changed = peer.state.changed() => {
                if changed.is_err() {
                    return Err(ClientError::Signaling("peer connection dropped".into()));
                }
                if peer.is_connected() && connected.is_none() {
                    connected = Some(started.elapsed());
                }
            }
            Some(candidate) = peer.candidates.recv() => {
                let init = candidate.unwrap_or_default();
                stream.send(Req::IceCandidate(pb::IceCandidateRequest {
                    to_peer_id: SERVER_PEER_ID.into(),
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid.unwrap_or_default(),
                    sdp_mline_index: u32::from(init.sdp_mline_index.unwrap_or(0)),
                })).await?;
            }
            response = stream.next() => match response?.response {
                Some(Resp::Notification(pb::SignalingNotification {
                    notification: Some(Notification::Answer(a)),
                })) if a.from_peer_id == SERVER_PEER_ID => {
                    answer = Some(started.elapsed());
                    peer.accept_answer(a.sdp).await?;
                }
                Some(Resp::Notification(pb::SignalingNotification {
                    notification: Some(Notification::IceCandidate(c)),
                })) if c.from_peer_id == SERVER_PEER_ID => {
                    let mline = u16::try_from(c.sdp_mline_index).ok();
                    let mid = (!c.sdp_mid.is_empty()).then_some(c.sdp_mid);
                    peer.add_candidate(c.candidate, mid, mline).await?;
                }
                Some(Resp::Error(err)) => {
                    return Err(ClientError::Signaling(format!("offer: {}", err.message)))
                }
                _ => {}
            },
        }
    }
    let Stream {
        outbound,
        mut inbound,
        ..
    } = stream;
    let reader = tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    let times = SetupTimes {
        answer: answer.unwrap_or_default(),
        connected: connected.unwrap_or_default(),
    };
    Ok((
        GrpcSession {
            outbound: Some(outbound),
            reader,
        },
        times,
    ))
}
