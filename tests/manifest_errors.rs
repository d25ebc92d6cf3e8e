//! A manifest that does not load stops the server at start, naming the file and the problem.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::process::Command;

#[test]
fn the_server_refuses_to_start_on_a_broken_manifest() {
    let dir = std::env::temp_dir().join(format!("rm-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("unparseable.yaml", "version: [unclosed\nnodes: {", "unparseable.yaml"),
        (
            "unknown-node.yaml",
            "version: v1\nmetadata: {name: x}\nnodes:\n  - {id: n1, node_type: NoSuchNode}\nconnections: []\n",
            "n1",
        ),
    ];
    for (name, text, must_mention) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
            .args([
                "--grpc-address",
                "127.0.0.1:0",
                "--http-address",
                "127.0.0.1:0",
            ])
            .args(["--ice-ips", "127.0.0.1", "--manifest"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name}: server started anyway");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(name),
            "{name}: stderr does not name the file: {stderr}"
        );
        assert!(
            stderr.contains(must_mention),
            "{name}: stderr does not name {must_mention:?}: {stderr}"
        );
    }
    let missing = Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .args([
            "--grpc-address",
            "127.0.0.1:0",
            "--http-address",
            "127.0.0.1:0",
        ])
        .args(["--manifest", "/nonexistent/pipeline.yaml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/pipeline.yaml"));
}
