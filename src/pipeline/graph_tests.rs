use super::*;
use crate::pipeline::data::RuntimeData;
use crate::pipeline::manifest::{Connection, NodeSpec};

fn text(s: &str) -> Envelope {
    Envelope::new(RuntimeData::Text {
        text: s.into(),
        language: String::new(),
    })
}

fn texts(envs: &[Envelope]) -> Vec<String> {
    envs.iter()
        .map(|e| match &e.data {
            RuntimeData::Text { text, .. } => text.clone(),
            RuntimeData::Json { payload, .. } => payload.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn manifest(nodes: &[(&str, &str)], edges: &[(&str, &str)]) -> Manifest {
    Manifest {
        nodes: nodes
            .iter()
            .map(|(id, node_type)| NodeSpec {
                id: (*id).into(),
                node_type: (*node_type).into(),
                params: serde_json::json!({}),
                is_streaming: true,
            })
            .collect(),
        connections: edges
            .iter()
            .map(|(from, to)| Connection {
                from: (*from).into(),
                to: (*to).into(),
            })
            .collect(),
        ..Manifest::loopback()
    }
}

/// Sends `inputs`, closes the input and collects every output until the output closes.
async fn run(manifest: Manifest, inputs: Vec<Envelope>) -> (Vec<Envelope>, Vec<NodeStats>) {
    let pipeline = Pipeline::new(manifest).unwrap();
    pipeline.run_to_end(inputs).await.unwrap()
}

fn numbered(n: usize) -> Vec<Envelope> {
    (0..n).map(|i| text(&i.to_string())).collect()
}

#[tokio::test]
async fn loopback_keeps_order() {
    let (out, stats) = run(Manifest::loopback(), numbered(500)).await;
    assert_eq!(texts(&out), texts(&numbered(500)));
    assert!(stats.is_empty());
}

#[tokio::test]
async fn linear_chain_of_two() {
    let m = manifest(&[("a", "PassThrough"), ("b", "PassThrough")], &[("a", "b")]);
    let (out, stats) = run(m, numbered(200)).await;
    assert_eq!(texts(&out), texts(&numbered(200)));
    assert_eq!(
        stats
            .iter()
            .map(|s| (s.id.as_str(), s.calls))
            .collect::<Vec<_>>(),
        vec![("a", 200), ("b", 200)]
    );
}

#[tokio::test]
async fn fan_out_reaches_both_sinks_in_order() {
    let m = manifest(
        &[
            ("a", "PassThrough"),
            ("b", "PassThrough"),
            ("c", "PassThrough"),
        ],
        &[("a", "b"), ("a", "c")],
    );
    let (out, _) = run(m, numbered(100)).await;
    assert_eq!(out.len(), 200);
    let got = texts(&out);
    // Each path keeps order, so the first copies of 0..100 appear in order, and so do the
    // second copies (min and max of two increasing positions both increase).
    let mut first = Vec::new();
    let mut second = Vec::new();
    for t in got {
        let n: usize = t.parse().unwrap();
        if first.contains(&n) {
            second.push(n);
        } else {
            first.push(n);
        }
    }
    assert_eq!(first, (0..100).collect::<Vec<_>>());
    assert_eq!(second, (0..100).collect::<Vec<_>>());
}

#[tokio::test]
async fn fan_in_merges_two_sources() {
    // Two sources, each getting every input, merging into one sink.
    let m = manifest(
        &[
            ("a", "PassThrough"),
            ("b", "PassThrough"),
            ("sink", "PassThrough"),
        ],
        &[("a", "sink"), ("b", "sink")],
    );
    let (out, stats) = run(m, numbered(50)).await;
    assert_eq!(out.len(), 100);
    assert_eq!(stats[2].calls, 100);
}

#[tokio::test]
async fn middle_node_is_not_an_output() {
    // calc is a middle node: its JSON goes to echo only, and the text inputs that calc does
    // not accept reach the output through `direct` alone.
    let m = manifest(
        &[
            ("calc", "CalculatorNode"),
            ("echo", "PassThrough"),
            ("direct", "PassThrough"),
        ],
        &[("calc", "echo")],
    );
    let request = Envelope::new(RuntimeData::Json {
        payload: r#"{"operation":"add","operands":[2,3]}"#.into(),
        schema_type: String::new(),
    });
    let (out, stats) = run(m, vec![request.clone(), text("hi")]).await;
    let got = texts(&out);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.contains(&r#"{"operation":"add","result":5.0}"#.to_owned()),
        "{got:?}"
    );
    assert!(got.contains(&"hi".to_owned()));
    assert_eq!(stats[0].calls, 1, "calc only takes JSON");
}

#[tokio::test]
async fn node_errors_skip_one_input() {
    let m = manifest(&[("calc", "CalculatorNode")], &[]);
    let json = |p: &str| {
        Envelope::new(RuntimeData::Json {
            payload: p.into(),
            schema_type: String::new(),
        })
    };
    let inputs = vec![
        json(r#"{"operation":"divide","operands":[1,0]}"#),
        json(r#"{"operation":"multiply","operands":[2,4]}"#),
    ];
    let (out, _) = run(m, inputs).await;
    assert_eq!(
        texts(&out),
        vec![r#"{"operation":"multiply","result":8.0}"#]
    );
}

#[test]
fn bad_manifests_are_rejected_at_build() {
    let cycle = manifest(
        &[("a", "PassThrough"), ("b", "PassThrough")],
        &[("a", "b"), ("b", "a")],
    );
    let err = Pipeline::new(cycle).unwrap_err().to_string();
    assert!(err.contains("cycle"), "{err}");
    let unknown = manifest(&[("vad1", "NoSuchNode")], &[]);
    let err = Pipeline::new(unknown).unwrap_err().to_string();
    assert!(
        err.contains("`vad1`") && err.contains("NoSuchNode"),
        "{err}"
    );
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let pipeline = Pipeline::new(Manifest::loopback()).unwrap();
    assert!(matches!(
        pipeline.start(CancellationToken::new()),
        Err(PipelineError::NoRuntime)
    ));
}

#[tokio::test]
async fn cancel_stops_every_task() {
    let m = manifest(&[("a", "PassThrough"), ("b", "PassThrough")], &[("a", "b")]);
    let pipeline = Pipeline::new(m).unwrap();
    let cancel = CancellationToken::new();
    let session = pipeline.start(cancel.clone()).unwrap();
    // Fill every channel, with nobody reading the output, so tasks are blocked in send.
    for i in 0..(4 * CHANNEL_CAPACITY) {
        if session.input.try_send(text(&i.to_string())).is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), session.tasks.wait())
        .await
        .expect("tasks did not stop on cancel");
    assert!(session.input.send(text("late")).await.is_err());
}

#[tokio::test]
async fn dropping_input_flushes_then_closes_output() {
    let m = manifest(&[("a", "PassThrough")], &[]);
    let pipeline = Pipeline::new(m).unwrap();
    let mut session = pipeline.start(CancellationToken::new()).unwrap();
    for env in numbered(10) {
        session.input.send(env).await.unwrap();
    }
    drop(session.input);
    let mut got = Vec::new();
    while let Some(env) = tokio::time::timeout(Duration::from_secs(2), session.output.recv())
        .await
        .expect("output did not close")
    {
        got.push(env);
    }
    assert_eq!(texts(&got), texts(&numbered(10)));
}

#[tokio::test]
async fn dropping_output_ends_the_session() {
    let m = manifest(&[("a", "PassThrough")], &[]);
    let pipeline = Pipeline::new(m).unwrap();
    let session = pipeline.start(CancellationToken::new()).unwrap();
    let PipelineSession {
        input,
        output,
        tasks,
        ..
    } = session;
    drop(output);
    input.send(text("x")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), tasks.wait())
        .await
        .expect("tasks outlived their output");
}

#[tokio::test]
async fn latency_histogram_counts_every_call() {
    let m = manifest(&[("a", "PassThrough"), ("b", "PassThrough")], &[("a", "b")]);
    let (_, stats) = run(m, numbered(50)).await;
    for node in stats {
        assert_eq!(
            node.latency.counts.iter().sum::<u64>(),
            node.calls,
            "{}",
            node.id
        );
        assert_eq!(
            node.latency.cumulative_seconds().last().map(|&(_, c)| c),
            Some(50)
        );
    }
}
