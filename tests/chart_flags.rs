//! The Helm chart configures the server only with flags and environment variables the binary
//! knows: every `--flag` and every `REMOTEMEDIA_*`, `WEBRTC_*` and `GRPC_*` variable in
//! charts/remotemedia/templates (and its tests/) appears in `webrtc_server --help` (or
//! `drain --help`, for the preStop hook, or `probe --help`, for the `helm test` Pod). Read from
//! the template files themselves: helm may not be installed.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "webrtc_server {args:?} failed");
    String::from_utf8(output.stdout).unwrap()
}

/// Tokens of `text` that start with `prefix` and continue with `allowed` characters.
fn tokens(text: &str, prefix: &str, allowed: impl Fn(char) -> bool) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at + prefix.len()..];
        let end = tail.find(|c: char| !allowed(c)).unwrap_or(tail.len());
        // A whole token: not the middle of a longer word, and not empty.
        if end > 0 && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            found.insert(format!("{prefix}{}", &tail[..end]));
        }
        rest = &tail[end..];
    }
    found
}

#[test]
fn every_flag_and_variable_of_the_chart_exists() {
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/remotemedia/templates");
    let mut text = String::new();
    let files = std::fs::read_dir(&templates)
        .unwrap()
        .chain(std::fs::read_dir(templates.join("tests")).unwrap());
    for entry in files {
        let path = entry.unwrap().path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // redis.yaml runs redis-server (its own flags), not webrtc_server.
        if (name.ends_with(".yaml") || name.ends_with(".tpl")) && name != "redis.yaml" {
            text.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    let flag_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let env_char = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
    let flags: BTreeSet<String> = tokens(&text, "--", flag_char)
        .into_iter()
        .filter(|f| f.chars().nth(2).is_some_and(|c| c.is_ascii_lowercase()))
        .collect();
    let mut env = tokens(&text, "REMOTEMEDIA_", env_char);
    env.extend(tokens(&text, "WEBRTC_", env_char));
    env.extend(tokens(&text, "GRPC_", env_char));
    assert!(flags.contains("--public-port"), "{flags:?}");
    assert!(
        env.contains("REMOTEMEDIA_REDIS_URL") && env.len() > 20,
        "{env:?}"
    );

    let help = help(&["--help"]) + &help(&["drain", "--help"]) + &help(&["probe", "--help"]);
    let known_flags = tokens(&help, "--", flag_char);
    let unknown_flags: Vec<&String> = flags.difference(&known_flags).collect();
    assert!(
        unknown_flags.is_empty(),
        "flags the binary does not know: {unknown_flags:?}"
    );
    let unknown_env: Vec<&String> = env
        .iter()
        // Secrets show as `[env: NAME]` (their values hidden), the rest as `[env: NAME=...]`.
        .filter(|name| {
            !help.contains(&format!("[env: {name}=")) && !help.contains(&format!("[env: {name}]"))
        })
        .collect();
    assert!(
        unknown_env.is_empty(),
        "variables the binary does not read: {unknown_env:?}"
    );
}
