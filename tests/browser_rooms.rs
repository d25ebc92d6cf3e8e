//! Two headless Chromium processes open the demo page in one room (#15): alice's fake
//! microphone plays 440 Hz and her fake camera runs, bob's microphone plays 660 Hz. Each page
//! plays the other's tone (measured in the page on the received stream, keyed by the
//! publisher's peer id from msid) and never its own; each shows the other's tile, bob's with
//! alice's video; the room channel opens and carries the track map; the pin and mute buttons
//! send their `subscribe` requests; `active_speakers` names both. When bob leaves, alice answers the server's offer that
//! retires his tracks and his tile goes. Fails (never skips) without chromium.
//!
//! The pages run with `?aec=0`: with echo cancellation on, Chromium's echo canceller takes a
//! page's steady test tone for echo while the other page's tone plays, and suppresses it.
//! Both pages are told, by `active_speakers`, that both participants speak.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cdp::Browser;
use common::fake_mic::{artifact_dir, write_tone_wav};
use common::TestServer;
use serde_json::Value;

const ROOM: &str = "browser-room";
/// How far a measured tone may be from the one played (the page's analyser has 5.9 Hz bins).
const TOLERANCE_HZ: f64 = 10.0;

/// One participant: its page and the tone its microphone plays.
struct Participant {
    id: &'static str,
    hz: f64,
    browser: Browser,
}

impl Participant {
    async fn join(server: &TestServer, id: &'static str, hz: f64, camera: bool) -> Self {
        let wav = artifact_dir().join(format!("room-{id}-{hz}.wav"));
        write_tone_wav(&wav, hz as f32);
        let url = format!(
            "http://{}/?autostart&room={ROOM}&peer_id={id}&camera={}&aec=0",
            server.http,
            u8::from(camera)
        );
        let flag = format!("--use-file-for-fake-audio-capture={}", wav.display());
        let browser = Browser::launch(&[flag], &url).await;
        Self { id, hz, browser }
    }

    /// `window.rmState`, failing the test on any page error.
    async fn state(&mut self) -> Value {
        self.snapshot().await.0
    }

    /// The page's state, the frequencies it hears (`rmRoomFrequencies()`: publisher peer id ->
    /// dominant Hz) and its tiles (`rmRoomTiles()`), read at once. room.js may still be loading
    /// right after the launch: no hooks yet reads as nothing heard and no tiles.
    async fn snapshot(&mut self) -> (Value, HashMap<String, f64>, Vec<Value>) {
        let value = self
            .browser
            .eval(
                "({ state: window.rmState ?? null, \
                    frequencies: window.rmRoomFrequencies ? window.rmRoomFrequencies() : {}, \
                    tiles: window.rmRoomTiles ? window.rmRoomTiles() : [] })",
            )
            .await;
        let state = value["state"].clone();
        assert!(
            state["errors"].as_array().is_none_or(Vec::is_empty),
            "{}'s page has errors: {state}",
            self.id
        );
        let frequencies = serde_json::from_value(value["frequencies"].clone()).unwrap();
        let tiles = value["tiles"].as_array().unwrap().clone();
        (state, frequencies, tiles)
    }

    /// Polls until `done` holds on this page; panics with `what` and the page's room state.
    async fn wait_for<F>(&mut self, what: &str, timeout: Duration, mut done: F)
    where
        F: FnMut(&Value, &HashMap<String, f64>, &[Value]) -> bool,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let (state, frequencies, tiles) = self.snapshot().await;
            if done(&state, &frequencies, &tiles) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out waiting for {what}; frequencies {frequencies:?}, tiles {tiles:?}, state {state}",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until this page plays `other`'s tone, several readings in a row (not a single
    /// blip), on the stream whose id is `other`; fails if it ever hears a stream under its own
    /// id, or its own tone.
    async fn hears(&mut self, other: &str, other_hz: f64) {
        let (own, own_hz) = (self.id, self.hz);
        let mut in_a_row = 0;
        let what = format!("{other}'s {other_hz} Hz");
        self.wait_for(&what, Duration::from_secs(30), |s, heard, _| {
            // Before the page made its room (right after the launch) there is nothing to count.
            assert_eq!(
                s["room"]["ownTracksReceived"].as_u64().unwrap_or(0),
                0,
                "{own} got its own track; room state {}",
                s["room"]
            );
            assert!(
                !heard.contains_key(own),
                "{own} hears a stream under its own id: {heard:?}"
            );
            assert!(
                heard.values().all(|hz| (hz - own_hz).abs() > TOLERANCE_HZ),
                "{own} hears its own {own_hz} Hz: {heard:?}"
            );
            let hz = heard.get(other).copied().unwrap_or(0.0);
            in_a_row = if (hz - other_hz).abs() <= TOLERANCE_HZ {
                in_a_row + 1
            } else {
                0
            };
            in_a_row >= 5
        })
        .await;
    }

    /// How many server offers this page answered.
    async fn offers_answered(&mut self) -> u64 {
        self.state().await["room"]["offersAnswered"]
            .as_u64()
            .unwrap()
    }

    /// Presses Stop (the WebSocket closes with a close frame, so the participant leaves at
    /// once rather than after the resume grace) and closes the browser.
    async fn leave(mut self) {
        self.browser
            .eval("document.getElementById('stop').click()")
            .await;
        self.browser.close().await;
    }
}

/// The tile of `peer` on a page.
fn tile<'a>(tiles: &'a [Value], peer: &str) -> Option<&'a Value> {
    tiles.iter().find(|t| t["peer"] == peer)
}

/// The mid of `peer`'s audio in a page's last track map.
fn audio_mid(state: &Value, peer: &str) -> Option<String> {
    state["room"]["tracks"].as_array()?.iter().find_map(|t| {
        (t["peer"] == peer && t["kind"] == "audio")
            .then(|| t["mid"].as_str().map(str::to_owned))
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_in_a_room_hear_each_other_and_not_themselves() {
    common::init_tracing();
    let started = Instant::now();
    let server = TestServer::start().await;
    let mut alice = Participant::join(&server, "alice", 440.0, true).await;
    let mut bob = Participant::join(&server, "bob", 660.0, false).await;

    for page in [&mut alice, &mut bob] {
        page.wait_for("ICE connected", Duration::from_secs(20), |s, _, _| {
            matches!(s["iceState"].as_str(), Some("connected" | "completed"))
        })
        .await;
    }
    println!("both connected after {:?}", started.elapsed());

    // Each page plays the other's tone on the stream whose id is the publisher, and nothing
    // under its own id or at its own tone.
    let (alice_hz, bob_hz) = (alice.hz, bob.hz);
    for (page, other, other_hz) in [(&mut alice, "bob", bob_hz), (&mut bob, "alice", alice_hz)] {
        page.hears(other, other_hz).await;
        let elapsed = started.elapsed();
        println!(
            "{} hears {other} at {other_hz} Hz after {elapsed:?}",
            page.id
        );
    }

    // The tiles: its own and the other's, keyed by peer id, the other's playing audio; bob's
    // tile of alice plays her camera. The room channel is open and its track map names the
    // other participant's tracks.
    for (page, other) in [(&mut alice, "bob"), (&mut bob, "alice")] {
        let other_publishes_video = other == "alice";
        let own = page.id;
        page.wait_for(
            &format!("{other}'s tile"),
            Duration::from_secs(20),
            |s, _, tiles| {
                let Some(theirs) = tile(tiles, other) else {
                    return false;
                };
                let video_ok = !other_publishes_video || theirs["videoWidth"].as_u64() > Some(0);
                tiles.len() == 2
                    && tile(tiles, own).is_some_and(|t| t["self"] == true)
                    && theirs["self"] == false
                    && theirs["audio"] == true
                    && video_ok
                    && audio_mid(s, other).is_some()
            },
        )
        .await;
        // The pin and mute buttons' channel is open (what they do is the server's side).
        let js = format!("window.rmRoomSubscribe({other:?}, 'video', 'auto')");
        assert_eq!(page.browser.eval(&js).await, Value::Bool(true));
    }
    // alice presses Pin, then Mute on bob's tile: his audio goes quiet on her page at once and
    // the page asks the server for video "pin", then audio and video "off" (applying them is
    // the server's side); Mute again asks for audio "auto" and video "pin" back.
    let clicked = alice
        .browser
        .eval(
            r#"(() => {
                const tile = document.querySelector('#tiles [data-peer="bob"]');
                const [pin, mute] = tile.querySelectorAll('button');
                pin.click();
                mute.click();
                const muted = tile.querySelector('audio').muted;
                mute.click();
                return { muted, unmuted: !tile.querySelector('audio').muted, sent: rmState.room.sent };
            })()"#,
        )
        .await;
    assert_eq!(clicked["muted"], true, "{clicked}");
    assert_eq!(clicked["unmuted"], true, "{clicked}");
    let sent: Vec<(String, String)> = clicked["sent"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "subscribe" && m["peer"] == "bob")
        .map(|m| {
            let field = |k: &str| m[k].as_str().unwrap().to_owned();
            (field("kind"), field("mode"))
        })
        .collect();
    let expected = [
        ("video", "auto"), // rmRoomSubscribe above
        ("video", "pin"),
        ("audio", "off"),
        ("video", "off"),
        ("audio", "auto"),
        ("video", "pin"),
    ]
    .map(|(kind, mode)| (kind.to_owned(), mode.to_owned()));
    assert_eq!(sent, expected, "alice's subscribe requests for bob");

    // Both tones are well above -50 dBov: each page is told both are speaking (from the
    // audio levels Chromium sends in its RTP header extension).
    for page in [&mut alice, &mut bob] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let speakers = page.browser.eval("window.rmRoomSpeakers()").await;
            let named = |id: &str| {
                speakers
                    .as_array()
                    .is_some_and(|list| list.iter().any(|p| p == id))
            };
            if named("alice") && named("bob") {
                println!("{} active_speakers: {speakers}", page.id);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} was not told both speak: {speakers}",
                page.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let shot = artifact_dir().join("room-bob.png");
    bob.browser.screenshot(&shot).await;

    // bob leaves: alice answers the server's offer that retires his tracks, and his tile goes.
    let answered = alice.offers_answered().await;
    bob.leave().await;
    alice
        .wait_for(
            "bob's tracks retired",
            Duration::from_secs(30),
            |s, heard, tiles| {
                s["room"]["offersAnswered"].as_u64() > Some(answered)
                    && heard.is_empty()
                    && tile(tiles, "bob").is_none()
            },
        )
        .await;
    println!(
        "browser rooms test passed in {:?}; screenshot {}",
        started.elapsed(),
        shot.display()
    );
    alice.leave().await;
    server.stop().await;
}

/// A departed participant's m-lines are recycled for the next participant's tracks (contract
/// item 5), and the newcomer is heard on them: the recycled line carries a new SSRC
/// (vendor/webrtc/PATCHES.md), because Chromium, seeing the same SSRC signalled again after the
/// line was `inactive`, decodes the newcomer's packets but never feeds them to the receiver's
/// track again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_on_a_departed_participants_line_is_heard() {
    common::init_tracing();
    let started = Instant::now();
    let server = TestServer::start().await;
    let mut alice = Participant::join(&server, "alice", 440.0, false).await;
    let bob = Participant::join(&server, "bob", 660.0, false).await;
    alice.hears("bob", bob.hz).await;
    let bobs_mid = audio_mid(&alice.state().await, "bob").expect("bob's audio in the track map");

    let answered = alice.offers_answered().await;
    bob.leave().await;
    alice
        .wait_for(
            "bob's tracks retired",
            Duration::from_secs(30),
            |s, heard, _| s["room"]["offersAnswered"].as_u64() > Some(answered) && heard.is_empty(),
        )
        .await;

    let carol = Participant::join(&server, "carol", 550.0, false).await;
    alice
        .wait_for("carol's audio line", Duration::from_secs(30), |s, _, _| {
            audio_mid(s, "carol").is_some()
        })
        .await;
    assert_eq!(
        audio_mid(&alice.state().await, "carol"),
        Some(bobs_mid),
        "carol's audio takes bob's recycled line"
    );
    alice.hears("carol", carol.hz).await;
    println!("recycled line test passed in {:?}", started.elapsed());
    carol.leave().await;
    alice.leave().await;
    server.stop().await;
}
