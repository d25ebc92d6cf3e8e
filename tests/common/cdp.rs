//! A minimal Chrome DevTools Protocol client over tokio-tungstenite: launch Debian's chromium
//! headless, open a page, evaluate JavaScript, take a screenshot. Enough for one demo-page
//! test without a browser-automation dependency tree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use super::websocket::Socket;
use super::WAIT;

/// Where Debian installs chromium (`make deps` installs it); `CHROMIUM` overrides.
pub fn chromium_path() -> PathBuf {
    let path =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "{} not found: the browser test needs Debian's chromium (`make deps` or `apt-get install -y chromium`)",
        path.display()
    );
    path
}

/// A headless chromium and its DevTools connection, attached to one page.
pub struct Browser {
    child: Child,
    socket: Socket,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Launches chromium with `extra` flags, opens `url` in a new page and attaches to it.
    pub async fn launch(extra: &[String], url: &str) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut command = Command::new(chromium_path());
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--allow-loopback-in-peer-connection",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--autoplay-policy=no-user-gesture-required",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1000,1400",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().expect("chromium starts");
        let endpoint = devtools_endpoint(profile.path()).await;
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("DevTools WebSocket");
        let mut browser = Self {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser
            .command("Target.createTarget", json!({"url": url}))
            .await;
        let attached = browser
            .command(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        browser
    }

    /// Sends a command (to the page once attached) and returns its result.
    pub async fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("DevTools send");
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("DevTools answered in time")
                .expect("DevTools open")
                .expect("DevTools frame");
            let Message::Text(text) = frame else { continue };
            let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if value["id"] == id {
                if let Some(error) = value.get("error") {
                    panic!("{method} failed: {error}");
                }
                return value["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page (awaiting promises) and returns its JSON value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Saves a PNG of the page.
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .command("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    pub async fn close(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Reads `DevToolsActivePort` (port, then the browser's path) once chromium wrote it.
async fn devtools_endpoint(profile: &Path) -> String {
    let file = profile.join("DevToolsActivePort");
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return format!("ws://127.0.0.1:{port}{path}");
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromium did not write {}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
