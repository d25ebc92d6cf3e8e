//! The original's command lines work: `-m`, a bare `--enable-data-channel`, `--mode websocket`'s
//! defaults, the seed's `cargo run ... --features grpc-signaling -- --mode grpc ...` (its
//! features exist), and a manifest without `version` (the original's loopback.yaml).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use remotemedia_webrtc::config::{Config, Mode};

fn parse(args: &[&str]) -> Config {
    let mut all = vec!["webrtc_server"];
    all.extend_from_slice(args);
    Config::try_from_iter(all).unwrap()
}

#[test]
fn dash_m_is_mode() {
    assert_eq!(parse(&["-m", "websocket"]).mode, Mode::Websocket);
    assert_eq!(parse(&["-m", "grpc"]).mode, Mode::Grpc);
    assert_eq!(parse(&["--mode", "worker"]).mode, Mode::Worker);
}

#[test]
fn a_bare_enable_data_channel_means_true_and_a_value_is_still_accepted() {
    assert!(parse(&["--enable-data-channel"]).media.enable_data_channel);
    assert!(
        parse(&["--enable-data-channel", "-m", "grpc"])
            .media
            .enable_data_channel
    );
    assert!(
        !parse(&["--enable-data-channel", "false"])
            .media
            .enable_data_channel
    );
    assert!(
        !parse(&["--enable-data-channel=false"])
            .media
            .enable_data_channel
    );
    assert!(parse(&[]).media.enable_data_channel);
}

#[test]
fn websocket_mode_defaults_to_the_original_signaling_url_and_moves_http_aside() {
    // The original's command, beside its signaling server on ws://localhost:8080.
    let original = parse(&[
        "--mode",
        "websocket",
        "--signaling-url",
        "ws://localhost:8080",
    ]);
    assert_eq!(original.http_address.to_string(), "0.0.0.0:8081");
    let bare = parse(&["-m", "websocket"]);
    assert_eq!(bare.signaling_url.as_deref(), Some("ws://localhost:8080"));
    assert_eq!(bare.http_address.to_string(), "0.0.0.0:8081");
    // Given values win.
    let given = parse(&[
        "-m",
        "websocket",
        "--signaling-url",
        "wss://sig.example.com/ws",
        "--http-address",
        "127.0.0.1:9000",
    ]);
    assert_eq!(
        given.signaling_url.as_deref(),
        Some("wss://sig.example.com/ws")
    );
    assert_eq!(given.http_address.to_string(), "127.0.0.1:9000");
    // Other modes keep theirs: no signaling URL, HTTP on 8080.
    let grpc = parse(&[]);
    assert_eq!(grpc.signaling_url, None);
    assert_eq!(grpc.http_address.to_string(), "0.0.0.0:8080");
}

#[test]
fn stun_servers_are_documented_as_what_public_ip_auto_asks() {
    let stun = parse(&["--stun-servers", "stun:stun.l.google.com:19302,stun:b:3478"]);
    assert_eq!(
        stun.media.stun_servers,
        ["stun:stun.l.google.com:19302", "stun:b:3478"]
    );
    let help = Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    // The option's text runs from its name to its `[env: ...]` line, maybe wrapped.
    let start = help
        .find("--stun-servers <")
        .unwrap_or_else(|| panic!("no --stun-servers in --help: {help}"));
    let entry = &help[start..];
    let entry = &entry[..entry.find("[env:").unwrap()];
    let entry = entry.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(entry.contains("`--public-ip auto` asks"), "{entry}");
}

/// The `[features]` table of our Cargo.toml, as `name = [...]` lines.
fn features() -> Vec<(String, String)> {
    let manifest = include_str!("../Cargo.toml");
    let mut in_features = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_features = line == "[features]";
            continue;
        }
        if in_features && !line.starts_with('#') {
            if let Some((name, value)) = line.split_once('=') {
                out.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }
    out
}

#[test]
fn the_original_feature_names_exist() {
    let features = features();
    let names: Vec<&str> = features.iter().map(|(n, _)| n.as_str()).collect();
    for name in ["grpc-signaling", "codecs", "h264", "full"] {
        assert!(names.contains(&name), "feature {name} missing: {names:?}");
    }
    // No-ops: the default build already has everything; they only keep old commands working.
    let default = features.iter().find(|(n, _)| n == "default").unwrap();
    assert_eq!(default.1, "[]");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Runs the seed's command (`-- --mode grpc --grpc-address ... --manifest <manifest>`, from
/// the crate's directory, plus loopback-only addresses) until it is ready; returns its log.
fn run_seed_command(manifest: &str) -> String {
    let (grpc, http) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "info")
        .args([
            "--mode",
            "grpc",
            "--grpc-address",
            &format!("127.0.0.1:{grpc}"),
        ])
        .args(["--manifest", manifest])
        .args(["--http-address", &format!("127.0.0.1:{http}")])
        .args(["--ice-ips", "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while http_get(http, "/readyz").is_none_or(|r| !r.starts_with("HTTP/1.0 200")) {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("{manifest}: server exited ({status}): {err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{manifest}: server did not become ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(TcpStream::connect(("127.0.0.1", grpc)).is_ok());
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    log
}

#[test]
fn the_seed_command_starts_with_our_loopback_and_the_original_one() {
    let ours = run_seed_command("./examples/loopback.yaml");
    assert!(!ours.contains("has no `version`"), "{ours}");
    // The original's loopback.yaml: `{"nodes": [], "connections": []}`, no version.
    let original = run_seed_command("./examples/original/loopback.yaml");
    assert!(
        original.contains("manifest has no `version`: taken as \"v1\""),
        "no warning in the log: {original}"
    );
    assert!(
        original.contains("examples/original/loopback.yaml"),
        "{original}"
    );
}
