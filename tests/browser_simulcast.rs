//! Simulcast from a real browser (#15 item 9, which tests/room_simulcast.rs covers with
//! webrtc-crate publishers): alice's headless Chromium opens the demo page with
//! `?simulcast=1`, so its fake camera goes out as two VP8 layers (rid `q` at 320x180, `f` at
//! 640x360). bob's page, in the same room without a camera, shows alice's video at the top
//! layer; asking for `max_height: 180` brings him the low layer, and lifting the limit
//! (`max_height: null`) brings the top layer back, although his REMB, which Chromium never
//! lets exceed 1.5× what it receives, may say little more than the low layer's rate. carol
//! joins with `max_height: 180` from the start, so her REMB never saw the top layer, and still
//! gets it when she lifts the limit. Heights are what bob's `<video>` element decodes. Fails (never skips)
//! without chromium.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::{Duration, Instant};

use common::cdp::Browser;
use common::fake_mic::{artifact_dir, write_tone_wav};
use common::TestServer;
use serde_json::Value;

const ROOM: &str = "simulcast-room";

async fn join(server: &TestServer, id: &str, hz: f32, camera: bool, simulcast: bool) -> Browser {
    let wav = artifact_dir().join(format!("simulcast-{id}-{hz}.wav"));
    write_tone_wav(&wav, hz);
    let url = format!(
        "http://{}/?autostart&room={ROOM}&peer_id={id}&camera={}&simulcast={}&aec=0",
        server.http,
        u8::from(camera),
        u8::from(simulcast)
    );
    let flag = format!("--use-file-for-fake-audio-capture={}", wav.display());
    Browser::launch(&[flag], &url).await
}

/// The height of `peer`'s video on `page` (0 while none plays); fails on any page error.
async fn video_height(page: &mut Browser, peer: &str) -> u64 {
    let value = page
        .eval(
            "({ errors: window.rmState ? window.rmState.errors : [], \
                tiles: window.rmRoomTiles ? window.rmRoomTiles() : [] })",
        )
        .await;
    assert!(
        value["errors"].as_array().is_none_or(Vec::is_empty),
        "page errors: {value}"
    );
    value["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["peer"] == peer)
        .and_then(|t| t["videoHeight"].as_u64())
        .unwrap_or(0)
}

/// Waits until `peer`'s video on `page` is `height` pixels tall in 3 readings in a row.
async fn wait_for_height(page: &mut Browser, peer: &str, height: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    let (mut in_a_row, mut seen) = (0, Vec::new());
    loop {
        let now = video_height(page, peer).await;
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        in_a_row = if now == height { in_a_row + 1 } else { 0 };
        if in_a_row >= 3 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{peer}'s video never stayed {height} px tall within {limit:?}; heights seen in turn: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `subscribe` for alice's video from a page with `max_height` (`None`: null, which
/// lifts the limit), retried until the room channel is open.
async fn subscribe(page: &mut Browser, max_height: Option<u32>) {
    let max = max_height.map_or("null".to_owned(), |h| h.to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent = page
            .eval(&format!(
                "window.rmRoomSubscribe ? window.rmRoomSubscribe('alice', 'video', 'auto', {max}) : false"
            ))
            .await;
        if sent == Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "bob's room channel never opened");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browsers_simulcast_layers_reach_a_subscriber_by_its_max_height() {
    common::init_tracing();
    let server = TestServer::start().await;
    let mut alice = join(&server, "alice", 440.0, true, true).await;
    let mut bob = join(&server, "bob", 660.0, false, false).await;

    // The top layer first: bob's path estimate starts at 1 Mbit/s and no limit is set. Chromium
    // starts its top layer once its bandwidth estimate allows, within a few seconds here.
    wait_for_height(&mut bob, "alice", 360, Duration::from_secs(30)).await;

    subscribe(&mut bob, Some(180)).await;
    wait_for_height(&mut bob, "alice", 180, Duration::from_secs(10)).await;

    subscribe(&mut bob, None).await;
    wait_for_height(&mut bob, "alice", 360, Duration::from_secs(10)).await;

    // carol joins asking for 180 p at once and keeps it long enough for her REMB to settle
    // near 1.5x the low layer's rate; lifting the limit must still bring her the top layer.
    let mut carol = join(&server, "carol", 880.0, false, false).await;
    subscribe(&mut carol, Some(180)).await;
    wait_for_height(&mut carol, "alice", 180, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(video_height(&mut carol, "alice").await, 180);
    subscribe(&mut carol, None).await;
    wait_for_height(&mut carol, "alice", 360, Duration::from_secs(15)).await;
    carol.close().await;

    // alice's own page shows her camera; the room never sends her own track back.
    assert_eq!(video_height(&mut alice, "alice").await, 360);
    let own = alice
        .eval("window.rmState.room ? window.rmState.room.ownTracksReceived : -1")
        .await;
    assert_eq!(own, Value::from(0), "alice got her own track back");

    bob.close().await;
    alice.close().await;
}
