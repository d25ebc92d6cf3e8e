//! The methods of the WebSocket dialect: typed params in, the core's answer out as JSON.

use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::rpc::peer_json;
use crate::proto::signaling::{self as pb};
use crate::signaling::auth::Identity;
use crate::signaling::core::{
    ConnectedPeer, OfferOutcome, SignalingCore, RESUME_TOKEN_METADATA_KEY,
};
use crate::signaling::error::{RpcError, SignalingError};
use crate::signaling::session_host::IceCandidate;

#[derive(Deserialize)]
struct AnnounceParams {
    peer_id: String,
    #[serde(default)]
    capabilities: Option<Capabilities>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    /// Takes the peer back after its socket broke (the same as metadata `resume_token`).
    #[serde(default)]
    resume_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Capabilities {
    audio: bool,
    video: bool,
    data: bool,
    extensions: String,
}

#[derive(Deserialize)]
struct SdpParams {
    to: String,
    sdp: String,
}

#[derive(Deserialize)]
struct CandidateParams {
    to: String,
    candidate: String,
    #[serde(default)]
    sdp_mid: Option<String>,
    #[serde(default)]
    sdp_mline_index: Option<u32>,
}

#[derive(Deserialize)]
struct DisconnectParams {
    to: String,
}

fn params<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    serde_json::from_value(params).map_err(|err| RpcError::InvalidParams(err.to_string()))
}

/// Runs one call for a connection; `peer` is `None` until `peer.announce` succeeds.
///
/// # Errors
/// `UnknownMethod`, `InvalidParams`, or the core's error.
pub async fn dispatch(
    core: &Arc<SignalingCore>,
    identity: &Identity,
    peer: &mut Option<ConnectedPeer>,
    method: &str,
    raw: Value,
) -> Result<Value, RpcError> {
    const METHODS: [&str; 7] = [
        "peer.announce",
        "peer.offer",
        "peer.answer",
        "peer.ice_candidate",
        "peer.disconnect",
        "peer.list",
        "server.info",
    ];
    if !METHODS.contains(&method) {
        return Err(RpcError::UnknownMethod(method.to_owned()));
    }
    if method == "peer.announce" {
        if let Some(peer) = peer {
            return Err(SignalingError::AlreadyAnnounced(peer.peer_id().into()).into());
        }
        let mut p: AnnounceParams = params(raw)?;
        if let Some(token) = p.resume_token.take() {
            p.metadata
                .insert(RESUME_TOKEN_METADATA_KEY.to_owned(), token);
        }
        let capabilities = p.capabilities.unwrap_or_default();
        let connected = core
            .announce(
                pb::AnnounceRequest {
                    peer_id: p.peer_id,
                    capabilities: Some(pb::PeerCapabilities {
                        audio: capabilities.audio,
                        video: capabilities.video,
                        data: capabilities.data,
                        extensions: capabilities.extensions,
                    }),
                    metadata: p.metadata,
                },
                identity,
            )
            .await?;
        let result = connected.announce_ack().await;
        *peer = Some(connected);
        return Ok(result);
    }
    // Before the announce only offers, answers and candidates are refused: the list is the
    // lobby's, and a disconnect is acknowledged and ignored, as the original did.
    let Some(peer) = peer else {
        return match method {
            "peer.list" => Ok(peer_list(core.lobby_peers().await)),
            "peer.disconnect" => Ok(json!({})),
            "server.info" => Ok(server_info(core).await),
            _ => Err(SignalingError::AnnounceRequired.into()),
        };
    };
    match method {
        "peer.offer" => {
            let p: SdpParams = params(raw)?;
            Ok(match peer.offer(&p.to, &p.sdp).await? {
                OfferOutcome::Answered {
                    offer_id,
                    answer_sdp,
                } => json!({"offer_id": offer_id, "type": "answer", "sdp": answer_sdp}),
                OfferOutcome::Forwarded { offer_id } => json!({"offer_id": offer_id}),
            })
        }
        "peer.answer" => {
            let p: SdpParams = params(raw)?;
            peer.answer(&p.to, &p.sdp).await?;
            Ok(json!({}))
        }
        "peer.ice_candidate" => {
            let p: CandidateParams = params(raw)?;
            let candidate = IceCandidate {
                candidate: p.candidate,
                sdp_mid: p.sdp_mid.unwrap_or_default(),
                sdp_mline_index: p.sdp_mline_index.unwrap_or(0),
            };
            peer.ice_candidate(&p.to, candidate).await?;
            Ok(json!({}))
        }
        "peer.disconnect" => {
            let p: DisconnectParams = params(raw)?;
            peer.disconnect(&p.to).await?;
            Ok(json!({}))
        }
        "peer.list" => Ok(peer_list(core.peers().await)),
        _ => Ok(server_info(core).await),
    }
}

/// The result of `peer.list`.
fn peer_list(peers: Vec<pb::PeerInfo>) -> Value {
    let peers: Vec<Value> = peers.iter().map(peer_json).collect();
    json!({"count": peers.len(), "peers": peers})
}

/// The result of `server.info`.
async fn server_info(core: &SignalingCore) -> Value {
    let stats = core.stats().await;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": stats.uptime_seconds,
        "connected_peers": stats.connected_peers,
    })
}
