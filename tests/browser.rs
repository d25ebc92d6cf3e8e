//! The demo page in headless Chromium: a fake microphone playing 440 Hz goes through the
//! server's loopback pipeline and comes back at 440 Hz; a text sent on the data channel comes
//! back; ICE connects on 127.0.0.1. Fails (never skips) without chromium: CI installs it.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::{Duration, Instant};

use common::cdp::Browser;
use common::fake_mic::{artifact_dir, write_speech_wav, write_tone_wav};
use common::TestServer;
use serde_json::Value;

/// Polls the page's `window.rmState` until `done` holds; panics with the last state.
async fn wait_for_state(
    browser: &mut Browser,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let state = browser.eval("window.rmState").await;
        if done(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; page state: {state}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_sends_440_hz_and_gets_it_back() {
    common::init_tracing();
    let started = Instant::now();
    let server = TestServer::start().await;
    let dir = artifact_dir();
    let wav = dir.join("tone-440.wav");
    write_tone_wav(&wav, 440.0);

    let url = format!("http://{}/?autostart", server.http);
    let flag = format!("--use-file-for-fake-audio-capture={}", wav.display());
    let mut browser = Browser::launch(&[flag], &url).await;

    let state = wait_for_state(
        &mut browser,
        "ICE connected",
        Duration::from_secs(20),
        |s| {
            assert!(
                s["errors"].as_array().is_none_or(Vec::is_empty),
                "page errors: {s}"
            );
            matches!(s["iceState"].as_str(), Some("connected" | "completed"))
        },
    )
    .await;
    println!("ICE connected after {:?}: {state}", started.elapsed());

    // Several readings in a row at 440 Hz: the tone really comes back, not a single blip.
    let mut in_a_row = 0;
    wait_for_state(&mut browser, "440 Hz back", Duration::from_secs(20), |s| {
        let hz = s["returnedFrequencyHz"].as_f64().unwrap_or(0.0);
        in_a_row = if (hz - 440.0).abs() <= 10.0 {
            in_a_row + 1
        } else {
            0
        };
        in_a_row >= 5
    })
    .await;

    let sent = browser
        .eval("window.rmSendText('hello from chromium')")
        .await;
    assert_eq!(sent, Value::Bool(true), "the data channel is open");
    let state = wait_for_state(
        &mut browser,
        "the text echo",
        Duration::from_secs(10),
        |s| {
            s["dataEcho"]
                .as_array()
                .is_some_and(|echo| echo.iter().any(|t| t == "hello from chromium"))
        },
    )
    .await;
    // Let the stats table fill before the screenshot.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let shot = dir.join("demo-page.png");
    browser.screenshot(&shot).await;
    println!(
        "browser test passed in {:?}; final state {state}; screenshot {}",
        started.elapsed(),
        shot.display()
    );
    browser.close().await;
    server.stop().await;
}

/// A server whose catalog has the example manifests (`voice_echo` among them).
async fn server_with_examples() -> TestServer {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    TestServer::start_with(|c| c.manifest_dir = Some(examples)).await
}

/// The demo page asks for a speech pipeline (its pipeline field, `?manifest=voice_echo`), a
/// fake microphone says Debian's recorded "front center" with pauses between, and the page
/// lists the final transcripts the server sends on the data channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_a_speech_pipelines_transcripts() {
    common::init_tracing();
    let started = Instant::now();
    let server = server_with_examples().await;
    let dir = artifact_dir();
    let wav = dir.join("front-center-pauses.wav");
    write_speech_wav(
        &wav,
        std::path::Path::new("/usr/share/sounds/alsa/Front_Center.wav"),
        2,
    );
    let url = format!("http://{}/?autostart&manifest=voice_echo", server.http);
    let flag = format!("--use-file-for-fake-audio-capture={}", wav.display());
    let mut browser = Browser::launch(&[flag], &url).await;
    let state = wait_for_state(
        &mut browser,
        "a final transcript on the page",
        Duration::from_secs(40),
        |s| {
            assert!(
                s["errors"].as_array().is_none_or(Vec::is_empty),
                "page errors: {s}"
            );
            s["transcripts"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|t| t.as_str().is_some_and(|t| !t.trim().is_empty()))
            })
        },
    )
    .await;
    let listed = browser
        .eval("document.getElementById('transcript').children.length")
        .await;
    assert!(
        listed.as_u64().is_some_and(|n| n >= 1),
        "the transcript list shows it: {listed}"
    );
    println!(
        "transcripts on the demo page after {:?}: {}",
        started.elapsed(),
        state["transcripts"]
    );
    browser.close().await;
    server.stop().await;
}

/// The demo page's text box feeds the speech pipeline's text to speech: the microphone says
/// nothing the VAD takes for speech (a pure tone), so the returned track is silent until the
/// page sends text, and then carries speech.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_typed_on_the_demo_page_is_spoken_by_the_speech_pipeline() {
    common::init_tracing();
    let started = Instant::now();
    let server = server_with_examples().await;
    let dir = artifact_dir();
    let wav = dir.join("tone-440-voice.wav");
    write_tone_wav(&wav, 440.0);
    let url = format!("http://{}/?autostart&manifest=voice_echo", server.http);
    let flag = format!("--use-file-for-fake-audio-capture={}", wav.display());
    let mut browser = Browser::launch(&[flag], &url).await;
    wait_for_state(
        &mut browser,
        "ICE connected",
        Duration::from_secs(20),
        |s| matches!(s["iceState"].as_str(), Some("connected" | "completed")),
    )
    .await;
    // Two seconds of the call: nothing comes back (the tone is not echoed, nor spoken).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet = browser.eval("window.rmState.returnedDbfs").await;
    assert!(
        quiet.as_f64().is_none_or(|db| db < -50.0),
        "the returned track is silent before any text: {quiet} dBFS"
    );
    let sent = browser
        .eval("window.rmSendText('the quick brown fox jumps over the lazy dog')")
        .await;
    assert_eq!(sent, Value::Bool(true), "the data channel is open");
    let state = wait_for_state(
        &mut browser,
        "speech on the returned track",
        Duration::from_secs(20),
        |s| s["returnedDbfs"].as_f64().is_some_and(|db| db > -35.0),
    )
    .await;
    println!(
        "typed text spoken after {:?}: returned {} dBFS",
        started.elapsed(),
        state["returnedDbfs"]
    );
    browser.close().await;
    server.stop().await;
}
