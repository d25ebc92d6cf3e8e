//! Entry points for the cargo-fuzz targets in `fuzz/`: the handlers a peer's bytes reach,
//! without a socket in front of them. Each one calls the code the server runs; nothing here
//! changes what the server does. SDP offers and manifests need nothing extra: the fuzz
//! targets use [`crate::signaling::SignalingCore`] and [`crate::pipeline::Manifest`] directly.

use std::sync::Arc;

use bytes::Bytes;

use crate::pipeline::Envelope;
use crate::signaling::{handle_text, ConnectedPeer, Connection, Identity, SignalingCore};

/// One `/ws` connection's state between text frames, as the connection task keeps it.
pub struct WebSocketConnection {
    core: Arc<SignalingCore>,
    identity: Identity,
    /// The announced peer (`None` until an announce succeeds), trace parent and dialect.
    state: Connection,
}

impl WebSocketConnection {
    /// A fresh connection (nothing announced yet) of a client that presented `identity`.
    pub fn new(core: Arc<SignalingCore>, identity: Identity) -> Self {
        Self {
            core,
            identity,
            state: Connection::default(),
        }
    }

    /// The answer the connection sends to one text frame; `None` for a JSON-RPC notification.
    /// (A notification that follows the answer in some dialects is not returned.)
    pub async fn text_frame(&mut self, text: &str) -> Option<String> {
        handle_text(&self.core, &self.identity, &mut self.state, text)
            .await
            .reply
    }

    /// The announced peer, if any (to read its notifications).
    pub fn peer(&mut self) -> Option<&mut ConnectedPeer> {
        self.state.peer.as_mut()
    }

    /// The client closed the socket: its peer leaves.
    pub async fn close(self) {
        if let Some(peer) = self.state.peer {
            peer.leave().await;
        }
    }
}

/// One data-channel message (SCTP string or binary) as the server peer reads it into the
/// pipeline; `None` when it is dropped.
pub fn data_channel_message(is_string: bool, data: Bytes) -> Option<Envelope> {
    crate::peer::decode_data_message(&data, is_string)
}

/// A pipeline output as the server peer writes it to the data channel.
pub fn data_channel_reply(envelope: Envelope) -> Bytes {
    crate::peer::encode_data_message(envelope)
}
