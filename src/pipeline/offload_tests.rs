//! The runner's side of offloaded nodes, with paused time and an executor the test drives.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::*;
use crate::pipeline::data::RuntimeData;
use crate::pipeline::error::NodeError;
use crate::pipeline::offload::Offload;

/// Keeps jobs until the test runs them.
#[derive(Debug, Default)]
struct ManualExecutor {
    queued: Mutex<VecDeque<(Job, Reply)>>,
}

impl Executor for ManualExecutor {
    fn submit(&self, _owner: u64, job: Job, reply: Reply) {
        self.queued.lock().push_back((job, reply));
    }
}

impl ManualExecutor {
    fn len(&self) -> usize {
        self.queued.lock().len()
    }

    /// Runs the oldest job, here, and replies.
    fn run_next(&self) {
        let (job, reply) = self.queued.lock().pop_front().unwrap();
        reply.send(Completed {
            id: job.id,
            utterance: job.utterance,
            outcome: Outcome::Ran((job.work)()),
        });
    }

    async fn wait_for(&self, jobs: usize) {
        while self.len() < jobs {
            tokio::task::yield_now().await;
        }
    }
}

/// Upper-cases each text on the executor, then sends the result out `DELAY` after it came
/// back (on a tick); a dropped job comes out as `dropped:<reason>`.
#[derive(Default)]
struct Shout {
    jobs: Vec<Job>,
    next: u64,
    due: VecDeque<(Instant, Envelope)>,
}

const DELAY: Duration = Duration::from_millis(100);

fn text(s: &str) -> Envelope {
    Envelope::new(RuntimeData::Text {
        text: s.into(),
        language: String::new(),
    })
}

fn text_of(env: &Envelope) -> String {
    match &env.data {
        RuntimeData::Text { text, .. } => text.clone(),
        other => panic!("{other:?}"),
    }
}

impl Node for Shout {
    fn process(&mut self, input: Envelope, _out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let said = text_of(&input);
        self.next += 1;
        self.jobs.push(Job {
            id: self.next,
            utterance: self.next,
            work: Box::new(move || Ok(vec![text(&said.to_uppercase())])),
        });
        Ok(())
    }

    fn offload(&mut self) -> Option<&mut dyn Offload> {
        Some(self)
    }
}

impl Offload for Shout {
    fn take_jobs(&mut self, jobs: &mut Vec<Job>) {
        jobs.append(&mut self.jobs);
    }

    fn complete(
        &mut self,
        done: Completed,
        now: Instant,
        _out: &mut Vec<Envelope>,
    ) -> Result<(), NodeError> {
        let outputs = match done.outcome {
            Outcome::Ran(result) => result?,
            Outcome::Dropped(reason) => vec![text(&format!("dropped:{}", reason.label()))],
        };
        self.due
            .extend(outputs.into_iter().map(|env| (now + DELAY, env)));
        Ok(())
    }

    fn next_tick(&self) -> Option<Instant> {
        self.due.front().map(|(at, _)| *at)
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        while self.due.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, env)) = self.due.pop_front() {
                out.push(env);
            }
        }
        Ok(())
    }
}

/// One offloaded node's task, as the runner starts it.
fn spawn(
    executor: Arc<ManualExecutor>,
) -> (
    mpsc::Sender<Envelope>,
    mpsc::Receiver<Envelope>,
    tokio::task::JoinHandle<()>,
) {
    let (input, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (tx, output) = mpsc::channel(CHANNEL_CAPACITY);
    let task = NodeTask {
        id: "shout".into(),
        index: 0,
        node: Box::new(Shout::default()),
        offloading: Some(Offloading::new(executor)),
        targets: vec![tx],
        cancel: CancellationToken::new(),
        stats: Arc::new(PipelineStats::new(std::iter::once("shout".to_owned()))),
        playback: crate::pipeline::playback::Playback::new(),
        latency: prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("t", "t"))
            .unwrap(),
    };
    (input, output, tokio::spawn(task.run(rx)))
}

#[tokio::test(start_paused = true)]
async fn a_result_comes_back_as_an_input_and_leaves_on_its_tick() {
    let executor = Arc::new(ManualExecutor::default());
    let (input, mut output, _task) = spawn(Arc::clone(&executor));
    input.send(text("hi")).await.unwrap();
    executor.wait_for(1).await;
    // Nothing leaves while the job waits, however long.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(output.try_recv().is_err());
    let ran = Instant::now();
    executor.run_next();
    let out = output.recv().await.unwrap();
    assert_eq!(text_of(&out), "HI");
    assert_eq!(Instant::now() - ran, DELAY, "left on the tick it asked for");
}

#[tokio::test(start_paused = true)]
async fn the_end_of_input_waits_for_jobs_and_ticks_before_the_node_finishes() {
    let executor = Arc::new(ManualExecutor::default());
    let (input, mut output, task) = spawn(Arc::clone(&executor));
    input.send(text("a")).await.unwrap();
    input.send(text("b")).await.unwrap();
    drop(input);
    executor.wait_for(2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!task.is_finished(), "ended with jobs outstanding");
    executor.run_next();
    executor.run_next();
    let mut got = Vec::new();
    while let Some(env) = output.recv().await {
        got.push(text_of(&env));
    }
    assert_eq!(got, ["A", "B"]);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn jobs_beyond_the_limit_are_dropped_counted_and_the_node_is_told() {
    let backlog = || {
        crate::pipeline::metrics::metrics()
            .offload_dropped
            .with_label_values(&["backlog"])
            .get()
    };
    let before = backlog();
    let executor = Arc::new(ManualExecutor::default());
    let (input, mut output, _task) = spawn(Arc::clone(&executor));
    for i in 0..MAX_JOBS_IN_FLIGHT + 2 {
        input.send(text(&i.to_string())).await.unwrap();
    }
    for _ in 0..2 {
        let out = output.recv().await.unwrap();
        assert_eq!(text_of(&out), "dropped:backlog");
    }
    assert_eq!(executor.len(), MAX_JOBS_IN_FLIGHT);
    assert!(backlog() >= before + 2);
    // The ones it kept still run.
    executor.run_next();
    assert_eq!(text_of(&output.recv().await.unwrap()), "0");
}

/// Answers each input with whether the output was speaking, and flushes it on "stop".
#[derive(Default)]
struct Listener {
    speaking: bool,
    flush: bool,
}

impl Node for Listener {
    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        self.flush = text_of(&input) == "stop";
        out.push(text(&format!("speaking:{}", self.speaking)));
        Ok(())
    }

    fn offload(&mut self) -> Option<&mut dyn Offload> {
        Some(self)
    }
}

impl Offload for Listener {
    fn take_jobs(&mut self, _jobs: &mut Vec<Job>) {}

    fn complete(
        &mut self,
        _done: Completed,
        _now: Instant,
        _out: &mut Vec<Envelope>,
    ) -> Result<(), NodeError> {
        Ok(())
    }

    fn output_speaking(&mut self, speaking: bool) {
        self.speaking = speaking;
    }

    fn take_flush(&mut self) -> bool {
        std::mem::take(&mut self.flush)
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_hears_whether_the_output_speaks_and_flushes_it_before_its_outputs_leave() {
    let playback = crate::pipeline::playback::Playback::new();
    let (input, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (tx, mut output) = mpsc::channel(CHANNEL_CAPACITY);
    let task = NodeTask {
        id: "listener".into(),
        index: 0,
        node: Box::new(Listener::default()),
        offloading: Some(Offloading::new(Arc::new(ManualExecutor::default()))),
        targets: vec![tx],
        cancel: CancellationToken::new(),
        stats: Arc::new(PipelineStats::new(std::iter::once("listener".to_owned()))),
        playback: playback.clone(),
        latency: prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("t", "t"))
            .unwrap(),
    };
    tokio::spawn(task.run(rx));
    input.send(text("hi")).await.unwrap();
    assert_eq!(text_of(&output.recv().await.unwrap()), "speaking:false");
    playback.played(Instant::now(), Duration::from_millis(200));
    input.send(text("stop")).await.unwrap();
    assert_eq!(text_of(&output.recv().await.unwrap()), "speaking:true");
    // The flush was asked for before the answer left.
    assert!(playback.take_flush());
    assert!(!playback.speaking(Instant::now()));
    input.send(text("hi")).await.unwrap();
    assert_eq!(text_of(&output.recv().await.unwrap()), "speaking:false");
    assert!(!playback.take_flush());
}
