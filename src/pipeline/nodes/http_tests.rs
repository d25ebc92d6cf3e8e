use super::*;

fn node(params: serde_json::Value) -> Result<HttpNode, String> {
    HttpNode::new(&Params::new("llm", &params).unwrap()).map_err(|e| e.to_string())
}

#[test]
fn bad_params_fail_at_load_naming_the_param() {
    let err = node(serde_json::json!({})).err().unwrap();
    assert!(err.contains("node `llm`") && err.contains("url"), "{err}");
    let err = node(serde_json::json!({"url": "ftp://example"}))
        .err()
        .unwrap();
    assert!(err.contains("params.url") && err.contains("http"), "{err}");
    let err = node(serde_json::json!({"url": "http://x/", "timeoutMs": 0}))
        .err()
        .unwrap();
    assert!(err.contains("params.timeoutMs"), "{err}");
    let err = node(serde_json::json!({"url": "http://x/", "headers": {"bad name": "v"}}))
        .err()
        .unwrap();
    assert!(err.contains("params.headers"), "{err}");
    let err = node(serde_json::json!({"url": "http://x/", "textPointer": "text"}))
        .err()
        .unwrap();
    assert!(err.contains("params.textPointer"), "{err}");
    assert!(node(serde_json::json!({"url": "https://x:8443/v1", "queue": 2})).is_ok());
}

fn text(s: &str) -> Envelope {
    Envelope::new(RuntimeData::Text {
        text: s.into(),
        language: String::new(),
    })
}

#[test]
fn a_full_queue_drops_its_oldest_request_and_one_runs_at_a_time() {
    let dropped = || {
        crate::pipeline::metrics::metrics()
            .http_requests
            .with_label_values(&["dropped"])
            .get()
    };
    let before = dropped();
    let mut http = node(serde_json::json!({"url": "http://127.0.0.1:9/", "queue": 2})).unwrap();
    let mut out = Vec::new();
    for i in 0..4 {
        http.process(text(&i.to_string()), &mut out).unwrap();
    }
    let mut jobs = Vec::new();
    http.take_async_jobs(&mut jobs);
    assert_eq!(jobs.len(), 1, "one at a time");
    assert_eq!(jobs[0].utterance, 0);
    // 1 was dropped for 3; 2 and 3 wait.
    let waiting: Vec<u64> = http.waiting.iter().map(|r| r.utterance).collect();
    assert_eq!(waiting, [2, 3]);
    assert!(dropped() > before);
    // When the first ends, the next one goes.
    let done = Completed {
        id: jobs[0].id,
        utterance: 0,
        outcome: Outcome::Ran(Ok(vec![text("answer")])),
    };
    http.complete(done, Instant::now(), &mut out).unwrap();
    assert_eq!(out, [text("answer")]);
    http.take_async_jobs(&mut jobs);
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[1].utterance, 2);
}

#[test]
fn items_become_json_text_or_the_pointed_text() {
    let settings = |pointer: Option<&str>| Settings {
        node: "llm".into(),
        url: Uri::from_static("http://x/"),
        headers: Vec::new(),
        timeout: Duration::from_secs(1),
        retries: 0,
        backoff: Duration::ZERO,
        text_pointer: pointer.map(str::to_owned),
        max_response_bytes: 1024,
    };
    let plain = settings(None);
    assert_eq!(
        plain.output(r#"{"text":"hi"}"#.into()).unwrap().data,
        RuntimeData::Json {
            payload: r#"{"text":"hi"}"#.into(),
            schema_type: HTTP_SCHEMA.into()
        }
    );
    assert_eq!(plain.output("hello".into()).unwrap(), text("hello"));
    let pointed = settings(Some("/choices/0/delta/content"));
    assert_eq!(
        pointed
            .output(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#.into())
            .unwrap(),
        text("Hi")
    );
    assert!(pointed.output(r#"{"choices":[]}"#.into()).is_none());
}
