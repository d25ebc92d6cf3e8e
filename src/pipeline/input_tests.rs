#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::pipeline::data::{AudioFrame, RuntimeData};

fn frame(n: u32) -> Envelope {
    Envelope::new(RuntimeData::Audio(AudioFrame {
        samples: vec![0.0; 4],
        sample_rate: n,
        channels: 1,
    }))
}

fn message(s: &str) -> Envelope {
    Envelope::new(RuntimeData::Text {
        text: s.into(),
        language: String::new(),
    })
}

/// What each queued item is: `a<rate>` for audio frames, the text for messages.
fn drain(queue: &mut Queue) -> Vec<String> {
    std::iter::from_fn(|| queue.pop())
        .map(|env| match env.data {
            RuntimeData::Audio(frame) => format!("a{}", frame.sample_rate),
            RuntimeData::Text { text, .. } => text,
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_full_queue_drops_the_oldest_audio_frame_not_the_newest() {
    let mut queue = Queue::new(3, usize::MAX);
    let mut dropped = 0;
    for n in 1..=5 {
        queue.push_droppable(frame(n), &mut dropped);
    }
    assert_eq!(dropped, 2);
    assert_eq!(drain(&mut queue), ["a3", "a4", "a5"]);
}

#[test]
fn messages_are_never_dropped_and_push_out_the_oldest_audio() {
    let mut queue = Queue::new(3, usize::MAX);
    let mut dropped = 0;
    queue.push_droppable(frame(1), &mut dropped);
    assert!(queue.try_push(message("m1"), &mut dropped).is_ok());
    queue.push_droppable(frame(2), &mut dropped);
    // Full: a message takes the place of the oldest frame.
    assert!(queue.try_push(message("m2"), &mut dropped).is_ok());
    assert_eq!(dropped, 1);
    // Full of messages but one frame: audio replaces audio, messages stay.
    queue.push_droppable(frame(3), &mut dropped);
    assert_eq!(dropped, 2);
    assert!(queue.try_push(message("m3"), &mut dropped).is_ok());
    assert_eq!(dropped, 3);
    // Full of messages: a message is given back, a frame is dropped itself.
    assert!(queue.try_push(message("m4"), &mut dropped).is_err());
    queue.push_droppable(frame(4), &mut dropped);
    assert_eq!(dropped, 4);
    assert_eq!(drain(&mut queue), ["m1", "m2", "m3"]);
}

#[tokio::test]
async fn a_sender_of_messages_waits_for_room_and_the_order_holds() {
    let (input, mut receiver) = input_queue(2);
    input.try_send(message("1")).unwrap();
    input.try_send(message("2")).unwrap();
    assert!(matches!(
        input.try_send(message("x")),
        Err(TrySendError::Full(_))
    ));
    let sender = input.clone();
    let waiting = tokio::spawn(async move { sender.send(message("3")).await });
    // The sender really waits: nothing took its place yet.
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    let mut got = Vec::new();
    for _ in 0..3 {
        let env = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
            .await
            .unwrap()
            .unwrap();
        if let RuntimeData::Text { text, .. } = env.data {
            got.push(text);
        }
    }
    waiting.await.unwrap().unwrap();
    assert_eq!(got, ["1", "2", "3"]);
}

#[tokio::test]
async fn the_input_ends_when_every_sender_is_gone_and_senders_learn_the_session_ended() {
    let (input, mut receiver) = input_queue(4);
    let second = input.clone();
    input.push_audio([frame(1)]).unwrap();
    drop(input);
    assert!(receiver.recv().await.is_some());
    let pending = tokio::spawn(async move {
        let mut receiver = receiver;
        let last = receiver.recv().await;
        (last.is_none(), receiver)
    });
    drop(second);
    let (ended, receiver) = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(ended);

    let (input, receiver2) = input_queue(1);
    input.try_send(message("fills it")).unwrap();
    let sender = input.clone();
    let waiting = tokio::spawn(async move { sender.send(message("waits")).await });
    tokio::task::yield_now().await;
    drop(receiver2);
    let result = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result, Err(InputClosed));
    assert!(input.is_closed());
    assert_eq!(input.push_audio([frame(1)]), Err(InputClosed));
    drop(receiver);
}

#[tokio::test]
async fn dropped_frames_are_counted_as_pipeline_queue_hits() {
    let counter = crate::metrics::metrics()
        .limit_hits
        .with_label_values(&["pipeline_queue"]);
    let before = counter.get();
    let (input, _receiver) = input_queue(2);
    assert_eq!(input.push_audio((1..=5).map(frame)).unwrap(), 3);
    // Other tests of this binary may drop frames too: at least ours are there.
    assert!(counter.get() >= before + 3);
}

#[test]
fn messages_are_bounded_by_bytes_but_one_large_message_always_fits_alone() {
    let mut queue = Queue::new(10, 10);
    let mut dropped = 0;
    assert!(queue.try_push(message("aaaa"), &mut dropped).is_ok());
    assert!(queue.try_push(message("bbbbbb"), &mut dropped).is_ok());
    // Ten bytes queued: a message of one more byte waits, audio does not.
    assert_eq!(
        queue.try_push(message("c"), &mut dropped).map_err(|e| e.1),
        Err(Full::Bytes)
    );
    queue.push_droppable(frame(1), &mut dropped);
    assert_eq!(drain(&mut queue), ["aaaa", "bbbbbb", "a1"]);
    // Empty again: a message over the whole bound goes in alone.
    assert!(queue
        .try_push(message("twelve bytes"), &mut dropped)
        .is_ok());
    assert!(queue.try_push(message(""), &mut dropped).is_err());
    assert_eq!(drain(&mut queue), ["twelve bytes"]);
    assert_eq!(queue.message_bytes, 0);
}

#[tokio::test]
async fn a_message_waiting_for_bytes_is_counted_once_and_goes_in_when_room_is_made() {
    let counter = crate::metrics::metrics()
        .limit_hits
        .with_label_values(&["pipeline_queue_bytes"]);
    let before = counter.get();
    let (input, mut receiver) = bounded_input_queue(10, 8);
    input.send(message("12345678")).await.unwrap();
    let waiting = tokio::spawn(async move { input.send(message("9")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "the second message waits for room");
    assert!(counter.get() > before);
    assert_eq!(
        receiver.recv().await.map(|e| e.data),
        Some(message("12345678").data)
    );
    waiting.await.unwrap().unwrap();
    assert_eq!(
        receiver.recv().await.map(|e| e.data),
        Some(message("9").data)
    );
}
