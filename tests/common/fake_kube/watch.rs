//! WATCH on pods: the changes after the requested resourceVersion, then the live ones, with
//! BOOKMARKs when asked; 410 Gone (an ERROR event in a 200 stream, as the API server's watch
//! cache answers) when that resourceVersion was compacted away.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::{matches_selector, status_body, Params, Shared};

/// One change to a pod, under the resourceVersion it made.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: String,
    pub object: Value,
}

/// Answers a WATCH request.
pub fn serve(shared: &Arc<Shared>, params: &Params) -> Response {
    let selector = params.get("labelSelector").cloned();
    let from: Option<u64> = params
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .filter(|rv| *rv > 0);
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);

    // Under the lock: what to replay, and the subscription to what follows it.
    let state = shared.state.lock();
    let live = shared.changes.subscribe();
    let ended = shared.watches.lock().clone();
    let start = state.revision;
    let bookmark_every = state.bookmark_every;
    let backlog: Result<Vec<Change>, u64> = match from {
        Some(rv) if rv < state.compacted => Err(rv),
        Some(rv) => Ok(state
            .history
            .iter()
            .filter(|c| c.revision > rv)
            .cloned()
            .collect()),
        None => Ok(state
            .pods
            .values()
            .map(|pod| Change {
                revision: start,
                kind: "ADDED".into(),
                object: pod.clone(),
            })
            .collect()),
    };
    let compacted = state.compacted;
    drop(state);

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(256);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let send = |line: Value| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(format!("{line}\n")))).await.is_ok() }
        };
        let backlog = match backlog {
            Ok(backlog) => backlog,
            Err(rv) => {
                let message = format!("too old resource version: {rv} ({compacted})");
                let _ =
                    send(json!({"type": "ERROR", "object": status_body(410, "Expired", &message)}))
                        .await;
                return;
            }
        };
        for change in backlog {
            if matches_selector(&change.object, selector.as_deref()) && !send(event(&change)).await
            {
                return;
            }
        }
        let mut live = live;
        let mut last = start;
        let mut tick = tokio::time::interval(bookmark_every);
        tick.tick().await;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                () = ended.cancelled() => return,
                () = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    // Every change up to `now` is in the channel already (they are sent under
                    // the lock): forward them, then promise the client nothing older is due.
                    let now = shared.state.lock().revision;
                    while let Ok(change) = live.try_recv() {
                        if change.revision > last {
                            last = change.revision;
                            if matches_selector(&change.object, selector.as_deref())
                                && !send(event(&change)).await
                            {
                                return;
                            }
                        }
                    }
                    last = last.max(now);
                    let bookmark = json!({"type": "BOOKMARK", "object": {
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"resourceVersion": now.to_string()},
                    }});
                    if !send(bookmark).await {
                        return;
                    }
                }
                change = live.recv() => match change {
                    Ok(change) if change.revision > last => {
                        last = change.revision;
                        if matches_selector(&change.object, selector.as_deref())
                            && !send(event(&change)).await
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let gone = status_body(410, "Expired", "the watch fell behind");
                        let _ = send(json!({"type": "ERROR", "object": gone})).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn event(change: &Change) -> Value {
    json!({"type": change.kind, "object": change.object})
}
