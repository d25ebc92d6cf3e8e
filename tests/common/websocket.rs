//! A JSON-RPC WebSocket signaling client for tests: calls wait for their own response and
//! keep the notifications that arrive meanwhile.

use std::collections::VecDeque;
use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::WAIT;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct WsClient {
    pub socket: Socket,
    next_id: u64,
    /// Notifications read while waiting for a response.
    pub notifications: VecDeque<Value>,
}

/// A JSON-RPC error: code and message.
pub type RpcFailure = (i64, String);

impl WsClient {
    /// Connects to `ws://<http>/ws` (no Origin header: a non-browser client).
    pub async fn connect(http: SocketAddr) -> Self {
        Self::connect_with_origin(http, None)
            .await
            .expect("WebSocket connects")
    }

    /// Connects with an optional `Origin` header, returning the handshake error if refused.
    pub async fn connect_with_origin(
        http: SocketAddr,
        origin: Option<&str>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        Self::connect_to(&format!("ws://{http}/ws"), origin, None).await
    }

    /// Connects to `url` with an optional `Origin` and an optional `Sec-WebSocket-Protocol`.
    pub async fn connect_to(
        url: &str,
        origin: Option<&str>,
        protocols: Option<&str>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if let Some(protocols) = protocols {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                protocols.parse().expect("protocol header"),
            );
        }
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().expect("origin header"));
        }
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self {
            socket,
            next_id: 0,
            notifications: VecDeque::new(),
        })
    }

    /// Connects to `wss://localhost:<port>/ws` at `http`, verifying the server with `tls`
    /// (a client configuration that trusts the test CA).
    pub async fn connect_tls(
        http: SocketAddr,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let url = format!("wss://localhost:{}/ws", http.port());
        let tcp = TcpStream::connect(http).await?;
        let (socket, _) = tokio_tungstenite::client_async_tls_with_config(
            url.into_client_request()?,
            tcp,
            None,
            Some(tokio_tungstenite::Connector::Rustls(tls)),
        )
        .await?;
        Ok(Self {
            socket,
            next_id: 0,
            notifications: VecDeque::new(),
        })
    }

    /// Connects and announces `peer_id`; returns the client and the announce result.
    pub async fn announce(http: SocketAddr, peer_id: &str) -> (Self, Value) {
        let mut client = Self::connect(http).await;
        let result = client
            .call(
                "peer.announce",
                json!({"peer_id": peer_id, "capabilities": {"audio": true, "data": true}, "metadata": {"transport": "ws"}}),
            )
            .await
            .expect("announce succeeds");
        (client, result)
    }

    pub async fn send_text(&mut self, text: String) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("send frame");
    }

    /// The next frame as JSON; panics on a close or timeout.
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("socket open")
                .expect("frame");
            match frame {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
                Message::Close(frame) => panic!("socket closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// Sends a request with a fresh numeric id and returns that id.
    pub async fn request(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send_text(
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        )
        .await;
        id
    }

    /// Waits for the response with `id` (a number or null), keeping notifications.
    pub async fn response(&mut self, id: Value) -> Result<Value, RpcFailure> {
        loop {
            let frame = self.recv().await;
            assert_eq!(frame["jsonrpc"], "2.0", "frame {frame}");
            if frame.get("method").is_some() {
                assert!(
                    frame.get("id").is_none(),
                    "notifications have no id: {frame}"
                );
                self.notifications.push_back(frame);
                continue;
            }
            if frame["id"] != id {
                panic!("unexpected response {frame} while waiting for id {id}");
            }
            if let Some(error) = frame.get("error") {
                return Err((
                    error["code"].as_i64().expect("error code"),
                    error["message"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            return Ok(frame["result"].clone());
        }
    }

    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, RpcFailure> {
        let id = self.request(method, params).await;
        self.response(json!(id)).await
    }

    /// The error code of a call that must fail.
    pub async fn error_code(&mut self, method: &str, params: Value) -> i64 {
        match self.call(method, params).await {
            Ok(result) => panic!("{method} unexpectedly succeeded: {result}"),
            Err((code, _)) => code,
        }
    }

    /// The params of the next notification named `method` (earlier others are dropped).
    pub async fn expect_notification(&mut self, method: &str) -> Value {
        loop {
            let frame = match self.notifications.pop_front() {
                Some(frame) => frame,
                None => self.recv().await,
            };
            if frame["method"] == method {
                return frame["params"].clone();
            }
        }
    }
}

impl WsClient {
    /// Reads until the server closes the socket; its close code (`None`: no close frame).
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("the server closes the socket")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}
