//! A renewed certificate (cert-manager rewrites the Secret's files) is served to new
//! connections without a restart; a broken renewal leaves the old certificate in service.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::tls::TestPki;
use common::{eventually, metric_value, TestServer};
use remotemedia_webrtc::metrics::metrics;

fn reloads(result: &str) -> f64 {
    metric_value(
        &metrics().render(),
        &format!("remotemedia_tls_certificate_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Kubernetes updates a mounted Secret by pointing a symlink at a new directory, so the
/// certificate and key change together: do the same.
fn swap_in(live: &Path, version: &Path) {
    let next = live.with_extension("next");
    std::os::unix::fs::symlink(version, &next).unwrap();
    std::fs::rename(&next, live).unwrap();
}

/// A directory holding `pki`'s certificate and key.
fn version(root: &Path, name: &str, pki: &TestPki) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&pki.cert, dir.join("tls.crt")).unwrap();
    std::fs::copy(&pki.key, dir.join("tls.key")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    common::init_tracing();
    let (first, renewed) = (TestPki::new(&[]), TestPki::new(&[]));
    let mount = tempfile::tempdir().unwrap();
    let live = mount.path().join("live");
    swap_in(&live, &version(mount.path(), "v1", &first));
    let (cert, key) = (live.join("tls.crt"), live.join("tls.key"));
    let server = TestServer::start_with(move |config| {
        config.tls.tls_cert = Some(cert);
        config.tls.tls_key = Some(key);
        config.tls.tls_reload_interval = Duration::from_millis(100);
    })
    .await;
    let (ok, failed) = (reloads("ok"), reloads("failed"));
    assert!(first.https_get(server.http, "/healthz").await.is_ok());

    // A broken renewal (a key that is not PEM): counted, and the old pair stays.
    let broken = version(mount.path(), "v2", &first);
    std::fs::write(broken.join("tls.key"), "not a key").unwrap();
    swap_in(&live, &broken);
    eventually("the broken renewal is noticed", || async {
        reloads("failed") >= failed + 1.0
    })
    .await;
    assert!(first.https_get(server.http, "/healthz").await.is_ok());

    // The renewal: another CA's pair.
    swap_in(&live, &version(mount.path(), "v3", &renewed));
    eventually("the renewed certificate is served", || async {
        renewed.https_get(server.http, "/healthz").await.is_ok()
    })
    .await;
    assert!(
        first.https_get(server.http, "/healthz").await.is_err(),
        "the old certificate is still served"
    );
    assert_eq!(reloads("ok"), ok + 1.0);
    assert_eq!(reloads("failed"), failed + 1.0);
    server.stop().await;
}
