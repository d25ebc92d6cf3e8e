use super::*;

const YAML: &str = r#"
version: v1
metadata:
  name: chain
  description: two nodes
  author: someone   # extra keys are ignored
nodes:
  - id: a
    node_type: PassThrough
    capabilities: { gpu: false }
    host: localhost
    runtime_hint: rust
    execution: { timeout_ms: 5 }
  - id: b
    node_type: AudioChunkerNode
    params: { chunkSize: 960 }
    is_streaming: true
connections:
  - { from: a, to: b }
media:
  audio: forward
  video: drop
  opus: { bitrate: 32000, dtx: true }
"#;

#[test]
fn yaml_parses_with_ignored_keys_and_defaults() {
    let m = Manifest::parse(YAML).unwrap();
    assert_eq!(m.version, "v1");
    assert_eq!(m.metadata.name, "chain");
    assert_eq!(m.nodes.len(), 2);
    assert_eq!(m.nodes[0].params, serde_json::json!({}));
    assert!(!m.nodes[0].is_streaming);
    assert!(m.nodes[1].is_streaming);
    assert_eq!(m.nodes[1].params["chunkSize"], 960);
    assert_eq!(m.media.audio, AudioMode::Forward);
    assert_eq!(m.media.video, VideoMode::Drop);
    assert_eq!(
        m.media.opus,
        OpusSettings {
            bitrate: 32_000,
            complexity: 10,
            fec: true,
            dtx: true
        }
    );
}

#[test]
fn json_parses_the_same() {
    let yaml = Manifest::parse(YAML).unwrap();
    let json = serde_json::to_string_pretty(&yaml).unwrap();
    assert_eq!(Manifest::parse(&json).unwrap(), yaml);
    let minimal = Manifest::parse(r#"  {"version": "1.0", "nodes": []}"#).unwrap();
    assert_eq!(minimal.media, MediaSettings::default());
    assert_eq!(minimal.media.opus.bitrate, 64_000);
}

#[test]
fn a_missing_version_is_v1_and_an_empty_one_an_error() {
    // The original's loopback.yaml had none.
    let m = Manifest::parse(r#"{"nodes": [], "connections": []}"#).unwrap();
    assert_eq!(m.version, "v1");
    assert_eq!(Manifest::parse("nodes: []").unwrap().version, "v1");
    let err = Manifest::parse("version: ''").unwrap_err().to_string();
    assert!(err.contains("version"), "{err}");
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let err = Manifest::parse("{\"version\": \"v1\",\n \"nodes\": [ {\"id\": 3} ]}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
    let err = Manifest::parse("version: v1\nnodes:\n  - id: a\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("node_type") && err.contains("line"), "{err}");
}

fn graph(nodes: &[&str], edges: &[(&str, &str)]) -> Result<Manifest, ManifestError> {
    let m = Manifest {
        nodes: nodes
            .iter()
            .map(|id| NodeSpec {
                id: (*id).into(),
                node_type: "PassThrough".into(),
                params: serde_json::Value::Null,
                is_streaming: false,
            })
            .collect(),
        connections: edges
            .iter()
            .map(|(f, t)| Connection {
                from: (*f).into(),
                to: (*t).into(),
            })
            .collect(),
        ..Manifest::loopback()
    };
    m.validate().map(|()| m)
}

#[test]
fn graph_rules_name_the_offender() {
    let msg = |r: Result<Manifest, ManifestError>| r.unwrap_err().to_string();
    assert!(msg(graph(&["a", "a"], &[])).contains("node `a`: duplicate `id`"));
    assert!(msg(graph(&[""], &[])).contains("nodes[0]: `id`"));
    assert!(msg(graph(&["a"], &[("a", "zz")])).contains("connections[0].to: no node with id `zz`"));
    assert!(msg(graph(&["a"], &[("a", "a")])).contains("node `a` is connected to itself"));
    assert!(msg(graph(&["a", "b"], &[("a", "b"), ("a", "b")])).contains("listed twice"));
}

#[test]
fn cycles_are_rejected_with_their_path() {
    let err = graph(
        &["src", "a", "b", "c", "sink"],
        &[
            ("src", "a"),
            ("a", "b"),
            ("b", "c"),
            ("c", "a"),
            ("c", "sink"),
        ],
    )
    .unwrap_err();
    let ManifestError::Cycle { path } = &err else {
        panic!("{err}")
    };
    assert!(
        ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"].contains(&path.as_str()),
        "{path}"
    );
    assert!(graph(&["a", "b", "c"], &[("a", "b"), ("a", "c"), ("b", "c")]).is_ok());
}

#[test]
fn media_ranges_are_checked() {
    let err = Manifest::parse("version: v1\nmedia: { opus: { bitrate: 1000 } }").unwrap_err();
    assert!(err.to_string().contains("media.opus.bitrate"), "{err}");
    let err = Manifest::parse("version: v1\nmedia: { opus: { complexity: 11 } }").unwrap_err();
    assert!(err.to_string().contains("media.opus.complexity"), "{err}");
    let err = Manifest::parse("version: v1\nmedia: { video: sideways }").unwrap_err();
    assert!(err.to_string().contains("sideways"), "{err}");
    let err = Manifest::parse("version: v1\nmedia: { opus: { bitrat: 9000 } }").unwrap_err();
    assert!(err.to_string().contains("bitrat"), "{err}");
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("rm-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "version: v1\nconnections: [{from: x, to: y}]\n").unwrap();
    let err = Manifest::load(&path).unwrap_err().to_string();
    assert!(err.contains("bad.yaml") && err.contains("`x`"), "{err}");
    let err = Manifest::load(&dir.join("missing.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.yaml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shipped_examples_load() {
    let loopback = Manifest::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/loopback.yaml"
    )))
    .unwrap();
    assert!(loopback.nodes.is_empty());
    let passthrough = Manifest::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/passthrough.yaml"
    )))
    .unwrap();
    assert_eq!(passthrough.nodes[0].node_type, "PassThrough");
}
