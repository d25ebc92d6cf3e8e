//! The methods of `/ws`: a request of any dialect in, the core's answer out as JSON in the
//! connection's dialect.

use std::sync::Arc;

use serde_json::{json, Value};

use super::dialect::answers::{Outcome, Reply};
use super::dialect::requests::{self as wire, Request, Step};
use super::dialect::Dialect;
use super::Connection;
use crate::signaling::auth::Identity;
use crate::signaling::core::{ConnectedPeer, SignalingCore};
use crate::signaling::error::{RpcError, SignalingError};
use crate::signaling::peer_id::SERVER_PEER_ID;
use crate::signaling::session_host::SessionError;

/// Runs one call for a connection; `connection.peer` is `None` until an announce succeeds,
/// which also fixes the connection's dialect.
///
/// # Errors
/// `UnknownMethod`, `InvalidParams`, or the core's error.
pub async fn dispatch(
    core: &Arc<SignalingCore>,
    identity: &Identity,
    connection: &mut Connection,
    method: &str,
    raw: Value,
) -> Result<Reply, RpcError> {
    let (step, named) =
        wire::method(method).ok_or_else(|| RpcError::UnknownMethod(method.to_owned()))?;
    match (&connection.peer, step) {
        (Some(peer), Step::Announce) => {
            return Err(SignalingError::AlreadyAnnounced(peer.peer_id().into()).into())
        }
        (None, Step::Offer | Step::Answer | Step::Candidate) => {
            return Err(SignalingError::AnnounceRequired.into())
        }
        _ => {}
    }
    let dialect = match step {
        Step::Announce => wire::of_announce(named, &raw),
        _ => connection.dialect.unwrap_or(named),
    };
    let request = match wire::decode(step, raw)? {
        Request::Announce(announce) => {
            let connected = core.announce(announce, identity).await?;
            let ack = connected.announce_ack().await;
            let reply = dialect.result(Outcome::Announced(ack), Some(connected.peer_id()));
            connection.peer = Some(connected);
            connection.dialect = Some(dialect);
            return Ok(reply);
        }
        request => request,
    };
    let Some(peer) = &mut connection.peer else {
        // Before the announce only offers, answers and candidates are refused (above): the
        // list is the lobby's, and a disconnect is acknowledged and ignored, as the original
        // did.
        let outcome = match request {
            Request::List => Outcome::Peers(core.lobby_peers().await),
            Request::Disconnect { peer_id } => Outcome::Disconnected { peer_id },
            Request::Info => Outcome::Info(server_info(core).await),
            _ => return Err(SignalingError::AnnounceRequired.into()),
        };
        return Ok(dialect.result(outcome, None));
    };
    let outcome = match request {
        Request::Announce(_) => {
            return Err(SignalingError::AlreadyAnnounced(peer.peer_id().into()).into())
        }
        Request::Offer { to, sdp, from } => {
            check_sender(from.as_deref(), peer)?;
            let outcome = peer.offer(&to, &sdp).await?;
            Outcome::Offered { to, outcome }
        }
        Request::Answer {
            to,
            sdp,
            from,
            offer_id,
        } => {
            check_sender(from.as_deref(), peer)?;
            peer.answer(&to, &sdp, offer_id.as_deref()).await?;
            Outcome::Sent { to }
        }
        Request::Candidate {
            to,
            candidate,
            from,
        } => {
            check_sender(from.as_deref(), peer)?;
            peer.ice_candidate(&to, candidate).await?;
            Outcome::Sent { to }
        }
        Request::Disconnect { peer_id } => {
            disconnect(peer, dialect, &peer_id).await?;
            Outcome::Disconnected { peer_id }
        }
        Request::List => Outcome::Peers(peer.peers().await),
        Request::Info => Outcome::Info(server_info(core).await),
    };
    Ok(dialect.result(outcome, Some(peer.peer_id())))
}

/// The original's clients name themselves in `from`; naming anyone else is refused, never
/// taken as the sender.
fn check_sender(from: Option<&str>, peer: &ConnectedPeer) -> Result<(), RpcError> {
    match from {
        Some(from) if from != peer.peer_id() => Err(RpcError::InvalidParams(format!(
            "`from` is {from:?}, but this connection announced {:?}",
            peer.peer_id()
        ))),
        _ => Ok(()),
    }
}

/// Ends `peer`'s session with `peer_id`. The original's client named itself ("I am
/// leaving"): that ends its server session. Both original servers acknowledged a
/// disconnect from a peer that is not there; so do their dialects here.
async fn disconnect(
    peer: &mut ConnectedPeer,
    dialect: Dialect,
    peer_id: &str,
) -> Result<(), SignalingError> {
    let to = if dialect != Dialect::RemoteMedia && peer_id == peer.peer_id() {
        SERVER_PEER_ID
    } else {
        peer_id
    };
    match peer.disconnect(to).await {
        Err(
            SignalingError::UnknownPeer(_) | SignalingError::Session(SessionError::NoSession(_)),
        ) if dialect.acks_every_disconnect() => Ok(()),
        other => other,
    }
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
