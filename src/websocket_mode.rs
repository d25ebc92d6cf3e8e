//! `--mode websocket`: this process joins an external JSON-RPC signaling server (of this
//! server's dialect or one of the original's, `--signaling-dialect`) as one peer and answers
//! every offer addressed to it with a server session (the same session manager as `grpc`
//! mode). When the signaling server goes away it reconnects with
//! backoff; media sessions do not depend on signaling and keep running meanwhile.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::error::Error;
use crate::http::{self, Readiness};
use crate::listener::bind;
use crate::peer::SessionManager;
use crate::sessions::session_manager;
use crate::signaling::dialect::client::{Call, Incoming, Negotiation};
use crate::signaling::dialect::{Dialect, DialectChoice};
use crate::signaling::{SessionEvent, SessionHost, SessionRequest};

/// First and largest wait between reconnection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bound, not yet running, `websocket` mode process.
pub struct WebSocketPeer {
    url: String,
    peer_id: String,
    dialect: DialectChoice,
    http_listener: TcpListener,
    sessions: Arc<SessionManager>,
    events: mpsc::Receiver<SessionEvent>,
}

/// `remotemedia-<hostname>`: unique per pod, and never the reserved `remotemedia-server`.
pub fn default_peer_id() -> String {
    let host = crate::config::hostname().unwrap_or_else(|| "unknown".into());
    format!("remotemedia-{host}")
}

impl WebSocketPeer {
    /// Loads the pipeline, binds HTTP (probes) and the WebRTC stack.
    ///
    /// # Errors
    /// No `--signaling-url`, a broken manifest, a port in use, or a WebRTC setup failure.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        let url = config
            .signaling_url
            .clone()
            .ok_or(Error::MissingSignalingUrl)?;
        let http_listener = bind("HTTP", config.http_address).await?;
        let (sessions, events) = session_manager(config).await?;
        Ok(Self {
            url,
            peer_id: config.peer_id.clone().unwrap_or_else(default_peer_id),
            dialect: config.signaling_dialect,
            http_listener,
            sessions,
            events,
        })
    }

    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http_listener.local_addr().ok()
    }

    pub fn sessions(&self) -> Arc<SessionManager> {
        Arc::clone(&self.sessions)
    }

    /// Stays joined (reconnecting as needed) until `shutdown` completes, then closes every
    /// session.
    ///
    /// # Errors
    /// When the HTTP listener fails.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let stop = CancellationToken::new();
        let readiness = Readiness::default();
        let http = http::serve(
            self.http_listener,
            http::router(readiness.clone(), None),
            stop.clone(),
        );
        readiness.set(true);
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            signal_stop.cancel();
        });

        let mut backoff = BACKOFF.0;
        while !stop.is_cancelled() {
            match tokio_tungstenite::connect_async(self.url.as_str()).await {
                Ok((socket, _)) => {
                    tracing::info!(url = self.url, peer_id = self.peer_id, "joined signaling");
                    let mut link = Link {
                        socket,
                        sessions: &self.sessions,
                        next_id: 0,
                        me: &self.peer_id,
                        dialect: Dialect::default(),
                    };
                    if link.serve(self.dialect, &mut self.events, &stop).await {
                        backoff = BACKOFF.0;
                    }
                }
                Err(err) => tracing::warn!(url = self.url, %err, "signaling unreachable"),
            }
            if stop.is_cancelled() {
                break;
            }
            tracing::info!(?backoff, "reconnecting to signaling");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => {}
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
        readiness.set(false);
        self.sessions.close_all().await;
        match http.await {
            Ok(Err(err)) => Err(err),
            _ => Ok(()),
        }
    }
}

/// One connection to the signaling server.
struct Link<'a> {
    socket: Socket,
    sessions: &'a Arc<SessionManager>,
    next_id: u64,
    /// The peer id this process announces.
    me: &'a str,
    /// The dialect of this connection's server (settled by the announce).
    dialect: Dialect,
}

impl Link<'_> {
    /// Announces (in each dialect `choice` allows, until one is taken) and serves until the
    /// socket ends or `stop`; returns whether the announce succeeded (a reason to reset the
    /// backoff).
    async fn serve(
        &mut self,
        choice: DialectChoice,
        events: &mut mpsc::Receiver<SessionEvent>,
        stop: &CancellationToken,
    ) -> bool {
        let mut negotiation = Negotiation::new(choice);
        self.dialect = negotiation.dialect();
        let mut announce = self.request(self.dialect.announce(self.me)).await;
        let mut announced = false;
        loop {
            tokio::select! {
                frame = self.socket.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => continue,
                    };
                    let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
                    // A server that cannot read the announce may answer it with id null.
                    let unread = !announced && message.get("id") == Some(&Value::Null);
                    if message.get("id") == Some(&json!(announce)) || unread {
                        if let Some(error) = message.get("error") {
                            let code = error["code"].as_i64().unwrap_or_default();
                            if let Some(next) = negotiation.refused(code) {
                                tracing::info!(%error, dialect = next.name(), "announce refused; trying another dialect");
                                self.dialect = next;
                                announce = self.request(next.announce(self.me)).await;
                                continue;
                            }
                            tracing::warn!(%error, "announce refused");
                            break;
                        }
                        announced = true;
                        tracing::info!(dialect = self.dialect.name(), "announced");
                    } else if let Some(error) = message.get("error") {
                        tracing::info!(%error, "signaling request failed");
                    } else if let Some(method) = message["method"].as_str() {
                        self.on_notification(method, &message["params"]).await;
                    }
                }
                Some(event) = events.recv() => self.on_session_event(event).await,
                () = stop.cancelled() => {
                    let _ = self.socket.close(None).await;
                    break;
                }
            }
        }
        announced
    }

    async fn on_notification(&mut self, method: &str, params: &Value) {
        match Incoming::read(method, params, self.me) {
            Some(Incoming::Offer {
                from,
                offer_id,
                sdp,
            }) => {
                let span = tracing::info_span!("offer", peer_id = from, offer_id);
                let request = SessionRequest {
                    peer_id: from.clone(),
                    offer_id,
                    offer_sdp: sdp,
                    manifest: None,
                    room: None,
                    room_manifest: None,
                };
                let created = self.sessions.create_session(request).instrument(span).await;
                match created {
                    Ok(answer) => {
                        self.request(self.dialect.answer(self.me, &from, &answer))
                            .await;
                    }
                    Err(err) => {
                        tracing::warn!(from, %err, "offer refused");
                        self.request(self.dialect.disconnect(&from, "offer refused"))
                            .await;
                    }
                }
            }
            Some(Incoming::Candidate { from, candidate }) => {
                if let Err(err) = self.sessions.add_candidate(&from, candidate).await {
                    tracing::debug!(%err, "candidate for no session");
                }
            }
            // Only an explicit disconnect ends a session: `peer.left` also comes when the
            // signaling server restarts, and media must outlive that. A caller that is really
            // gone is reclaimed by the session's own ICE consent and media timeouts.
            Some(Incoming::Disconnected { peer_id }) => {
                self.sessions.close_session(&peer_id).await;
            }
            None => {}
        }
    }

    async fn on_session_event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::LocalCandidate { peer_id, candidate } => {
                self.request(self.dialect.candidate(self.me, &peer_id, &candidate))
                    .await;
            }
            SessionEvent::Closed { peer_id, reason } => {
                tracing::info!(peer_id, reason, "session closed");
                self.request(self.dialect.disconnect(&peer_id, &reason))
                    .await;
            }
            // A websocket-mode peer is never in one of this server's rooms.
            SessionEvent::ServerOffer { peer_id, .. } => {
                tracing::warn!(peer_id, "server offer for a websocket-mode peer dropped");
            }
        }
    }

    /// Sends a request and returns its id; a failed send shows up as the socket ending.
    async fn request(&mut self, (method, params): Call) -> u64 {
        self.next_id += 1;
        let frame =
            json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        let _ = self
            .socket
            .send(Message::Text(frame.to_string().into()))
            .await;
        self.next_id
    }
}
