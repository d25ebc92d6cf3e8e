//! Certificate and key files that cannot be used stop the server at start, with a message
//! naming the flag or the file at fault.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::path::Path;

use common::tls::TestPki;

/// Runs a grpc-mode server on loopback with `args` until it exits.
fn run_server(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut all = vec![
        "--grpc-address",
        "127.0.0.1:0",
        "--http-address",
        "127.0.0.1:0",
        "--ice-ips",
        "127.0.0.1",
    ];
    all.extend_from_slice(args);
    common::run_until_exit(&all)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_certificate_without_its_key_names_the_missing_flag() {
    let pki = TestPki::new(&[]);
    let (status, output) = run_server(&["--tls-cert", path(&pki.cert)]);
    assert!(!status.success());
    assert!(output.contains("--tls-key"), "{output}");
    let (status, output) = run_server(&["--tls-key", path(&pki.key)]);
    assert!(!status.success());
    assert!(output.contains("--tls-cert"), "{output}");
}

#[test]
fn missing_files_are_named() {
    let (status, output) = run_server(&[
        "--tls-cert",
        "/nonexistent/remotemedia/tls.crt",
        "--tls-key",
        "/nonexistent/remotemedia/tls.key",
    ]);
    assert!(!status.success());
    assert!(
        output.contains("/nonexistent/remotemedia/tls.crt"),
        "{output}"
    );
    assert!(output.contains("cannot read"), "{output}");

    let pki = TestPki::new(&[]);
    let (status, output) = run_server(&[
        "--tls-cert",
        path(&pki.cert),
        "--tls-key",
        "/nonexistent/remotemedia/tls.key",
    ]);
    assert!(!status.success());
    assert!(
        output.contains("/nonexistent/remotemedia/tls.key"),
        "{output}"
    );
}

#[test]
fn garbage_pem_is_named() {
    let pki = TestPki::new(&[]);
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();

    let (status, output) = run_server(&["--tls-cert", path(&garbage), "--tls-key", path(&pki.key)]);
    assert!(!status.success());
    assert!(output.contains(path(&garbage)), "{output}");
    assert!(output.contains("no PEM certificate"), "{output}");

    let (status, output) =
        run_server(&["--tls-cert", path(&pki.cert), "--tls-key", path(&garbage)]);
    assert!(!status.success());
    assert!(output.contains(path(&garbage)), "{output}");
    assert!(output.contains("private key"), "{output}");

    // A certificate PEM block with a corrupt body.
    let corrupt = pki.dir.path().join("corrupt.pem");
    std::fs::write(
        &corrupt,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (status, output) = run_server(&["--tls-cert", path(&corrupt), "--tls-key", path(&pki.key)]);
    assert!(!status.success());
    assert!(output.contains(path(&corrupt)), "{output}");
}

#[test]
fn a_key_of_another_certificate_is_named() {
    let pki = TestPki::new(&[]);
    let other = TestPki::new(&[]);
    let (status, output) =
        run_server(&["--tls-cert", path(&pki.cert), "--tls-key", path(&other.key)]);
    assert!(!status.success());
    assert!(output.contains(path(&other.key)), "{output}");
    assert!(output.contains("does not belong"), "{output}");
}
