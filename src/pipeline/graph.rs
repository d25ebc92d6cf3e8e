//! The graph runner: one tokio task per node, bounded channels along the manifest's edges.
//!
//! Sources (nodes with no incoming edge) get every session input; sinks (no outgoing edge) feed
//! the session output; an empty graph is a loopback. Every edge is a FIFO channel and every node
//! one task, so order holds along each path. Channels are bounded: a slow consumer slows the
//! producer instead of growing a queue. An offloaded node's task also hands its jobs to the
//! process's offload pool and takes their outcomes and its ticks as inputs (see
//! [`super::offload`]); at the end of the stream it finishes once those are done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::data::Envelope;
use super::error::PipelineError;
use super::histogram::{AtomicHistogram, LatencyHistogram};
use super::input::{bounded_input_queue, InputReceiver, PipelineInput};
use super::manifest::Manifest;
use super::nodes::{canonical_type, create_node, create_node_with, Node, NodeLimits};
use super::offload::{
    count_dropped, AsyncJob, Chunk, Completed, DropReason, Executor, Job, JobId, Outcome, Progress,
    Reply,
};
use super::playback::Playback;
use super::pool::BlockingPool;

/// Capacity of every channel in a session: enough to absorb a burst of 20 ms audio frames
/// (over a second) without letting a stuck consumer hold unbounded memory.
pub const CHANNEL_CAPACITY: usize = 64;
/// The input queue of [`Pipeline::start`] (`--pipeline-queue-frames`' default): a second of
/// 20 ms audio frames.
pub const DEFAULT_INPUT_QUEUE: usize = 50;
/// The bytes of messages the input queue of [`Pipeline::start`] holds
/// (`--pipeline-queue-bytes`' default).
pub const DEFAULT_INPUT_QUEUE_BYTES: usize = 1024 * 1024;
/// Jobs one offloaded node may have outstanding (queued or running) at once: the room of its
/// reply channel. A job beyond it is dropped at once, counted as `backlog` (a node keeps far
/// fewer: this only bounds a node that does not).
pub const MAX_JOBS_IN_FLIGHT: usize = 32;

/// A validated manifest with every node known to build; start one session per peer from it.
#[derive(Debug, Clone)]
pub struct Pipeline {
    manifest: Manifest,
    /// Per node index, the indices it sends to.
    successors: Vec<Vec<usize>>,
    /// Nodes with no incoming edge: they receive the session input.
    sources: Vec<usize>,
    /// What each session's nodes may hold (the server's flags).
    limits: NodeLimits,
    /// Where offloaded nodes' jobs run: the process's [`BlockingPool`] unless a test gives
    /// its own.
    executor: Option<Arc<dyn Executor>>,
}

/// One running instance of a [`Pipeline`].
///
/// Drop `input` (every clone) to end the stream: every node is finished in graph order and
/// `output` closes after the last output. Fire the cancel token given to [`Pipeline::start`]
/// to stop at once.
#[derive(Debug)]
pub struct PipelineSession {
    /// Live audio is dropped oldest first when the pipeline falls behind; messages wait.
    pub input: PipelineInput,
    pub output: mpsc::Receiver<Envelope>,
    /// The output's playback of pipeline audio: whoever plays `output` reports to it and
    /// applies its flushes (barge-in, see [`super::playback`]).
    pub playback: Playback,
    stats: Arc<PipelineStats>,
    tasks: TaskTracker,
}

impl Pipeline {
    /// Validates the graph and builds every node once, so bad params fail at server start
    /// rather than at the first call.
    ///
    /// # Errors
    /// [`PipelineError::Manifest`] for graph errors, [`PipelineError::Node`] for unknown node
    /// types or bad params; both name the node.
    pub fn new(manifest: Manifest) -> Result<Pipeline, PipelineError> {
        manifest.validate()?;
        for spec in &manifest.nodes {
            create_node(spec)?;
        }
        let successors = manifest.successors();
        let mut has_incoming = vec![false; manifest.nodes.len()];
        for next in successors.iter().flatten() {
            has_incoming[*next] = true;
        }
        let sources = (0..manifest.nodes.len())
            .filter(|&i| !has_incoming[i])
            .collect();
        Ok(Pipeline {
            manifest,
            successors,
            sources,
            limits: NodeLimits::default(),
            executor: None,
        })
    }

    /// The same pipeline, its offloaded nodes' jobs run by `executor` instead of the
    /// process's pool (tests).
    #[must_use]
    pub fn with_executor(mut self, executor: Arc<dyn Executor>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// The same pipeline, its sessions' nodes bounded by `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: NodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The manifest this pipeline was built from (the server reads its `media` block).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// [`Pipeline::start_with_queue`] with the default input queue.
    ///
    /// # Errors
    /// As [`Pipeline::start_with_queue`].
    pub fn start(&self, cancel: CancellationToken) -> Result<PipelineSession, PipelineError> {
        self.start_with_queue(cancel, DEFAULT_INPUT_QUEUE, DEFAULT_INPUT_QUEUE_BYTES)
    }

    /// Builds fresh nodes and spawns the session's tasks on the current runtime; the input
    /// queue holds `input_queue_items` items, and messages of `input_queue_bytes` (or one larger
    /// message alone).
    ///
    /// # Errors
    /// [`PipelineError::NoRuntime`] outside a tokio runtime; [`PipelineError::Node`] if a node
    /// that built in [`Pipeline::new`] now fails to.
    pub fn start_with_queue(
        &self,
        cancel: CancellationToken,
        input_queue_items: usize,
        input_queue_bytes: usize,
    ) -> Result<PipelineSession, PipelineError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| PipelineError::NoRuntime)?;
        let mut nodes = self
            .manifest
            .nodes
            .iter()
            .map(|spec| create_node_with(spec, &self.limits))
            .collect::<Result<Vec<_>, _>>()?;
        let mut offloading = Vec::with_capacity(nodes.len());
        for node in &mut nodes {
            offloading.push(match node.offload() {
                Some(_) => Some(Offloading::new(self.executor()?)),
                None => None,
            });
        }
        let (input_tx, input_rx) = bounded_input_queue(input_queue_items, input_queue_bytes);
        let (output_tx, output_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (node_tx, node_rx): (Vec<_>, Vec<_>) = (0..nodes.len())
            .map(|_| mpsc::channel::<Envelope>(CHANNEL_CAPACITY))
            .unzip();
        let stats = Arc::new(PipelineStats::new(
            self.manifest.nodes.iter().map(|n| n.id.clone()),
        ));
        let playback = Playback::new();
        let tasks = TaskTracker::new();

        let nodes = nodes.into_iter().zip(offloading);
        for (index, ((node, offloading), rx)) in nodes.zip(node_rx).enumerate() {
            let targets = if self.successors[index].is_empty() {
                vec![output_tx.clone()]
            } else {
                self.successors[index]
                    .iter()
                    .map(|&next| node_tx[next].clone())
                    .collect()
            };
            let task = NodeTask {
                id: self.manifest.nodes[index].id.clone(),
                index,
                node,
                offloading,
                targets,
                cancel: cancel.clone(),
                stats: Arc::clone(&stats),
                playback: playback.clone(),
                // Resolved once per node: labelling on every frame would cost a lookup.
                latency: super::metrics::metrics()
                    .node_seconds
                    .with_label_values(&[canonical_type(&self.manifest.nodes[index].node_type)]),
            };
            tasks.spawn_on(task.run(rx), &runtime);
        }

        let source_targets = if self.manifest.nodes.is_empty() {
            vec![output_tx]
        } else {
            self.sources.iter().map(|&i| node_tx[i].clone()).collect()
        };
        // Only the tasks hold senders now, so each channel closes when its upstreams end.
        drop(node_tx);
        tasks.spawn_on(forward_input(input_rx, source_targets, cancel), &runtime);
        tasks.close();

        Ok(PipelineSession {
            input: input_tx,
            output: output_rx,
            playback,
            stats,
            tasks,
        })
    }
}

impl Pipeline {
    /// Where this pipeline's offloaded nodes run their jobs.
    fn executor(&self) -> Result<Arc<dyn Executor>, PipelineError> {
        match &self.executor {
            Some(executor) => Ok(Arc::clone(executor)),
            None => Ok(BlockingPool::global()?),
        }
    }

    /// Runs one session over `inputs` without WebRTC: feeds them in order (waiting for room),
    /// ends the input, and collects every output until the whole graph has finished; then the
    /// per-node stats. For tests, benchmarks and offline runs.
    ///
    /// # Errors
    /// As [`Pipeline::start`].
    pub async fn run_to_end(
        &self,
        inputs: Vec<Envelope>,
    ) -> Result<(Vec<Envelope>, Vec<NodeStats>), PipelineError> {
        let PipelineSession {
            input,
            mut output,
            stats,
            tasks,
            ..
        } = self.start(CancellationToken::new())?;
        // A task of its own: more inputs than the channels hold must not deadlock the run.
        let feeder = tokio::spawn(async move {
            for env in inputs {
                if input.send(env).await.is_err() {
                    break;
                }
            }
        });
        let mut outputs = Vec::new();
        while let Some(env) = output.recv().await {
            outputs.push(env);
        }
        // It has ended (the output closes only after the input did) and cannot panic.
        let _ = feeder.await;
        tasks.wait().await;
        Ok((outputs, stats.snapshot()))
    }
}

impl PipelineSession {
    /// Per node: calls to `process` and the time spent in them, in manifest order.
    pub fn stats(&self) -> Vec<NodeStats> {
        self.stats.snapshot()
    }

    /// The session's tasks (closed: `wait()` returns once all of them have ended).
    pub fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }
}

/// Processing-time counters of one session, shared by its node tasks.
#[derive(Debug)]
pub struct PipelineStats {
    nodes: Vec<NodeCounters>,
}

#[derive(Debug)]
struct NodeCounters {
    id: String,
    calls: AtomicU64,
    nanos: AtomicU64,
    /// Distribution of `process` times, for p95/p99 that a mean hides.
    latency: AtomicHistogram,
}

/// A snapshot of one node's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    pub id: String,
    pub calls: u64,
    pub total: Duration,
    /// Calls per latency bucket (see [`super::LATENCY_BUCKETS_US`]).
    pub latency: LatencyHistogram,
}

impl NodeStats {
    /// Mean time per `process` call (zero before the first).
    pub fn mean(&self) -> Duration {
        match u32::try_from(self.calls) {
            Ok(0) => Duration::ZERO,
            Ok(calls) => self.total / calls,
            Err(_) => Duration::from_nanos((self.total.as_nanos() / u128::from(self.calls)) as u64),
        }
    }
}

impl PipelineStats {
    fn new(ids: impl Iterator<Item = String>) -> Self {
        Self {
            nodes: ids
                .map(|id| NodeCounters {
                    id,
                    calls: AtomicU64::new(0),
                    nanos: AtomicU64::new(0),
                    latency: AtomicHistogram::default(),
                })
                .collect(),
        }
    }

    fn record(&self, index: usize, elapsed: Duration) {
        if let Some(node) = self.nodes.get(index) {
            node.calls.fetch_add(1, Ordering::Relaxed);
            let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            node.nanos.fetch_add(nanos, Ordering::Relaxed);
            node.latency.record(elapsed);
        }
    }

    /// The counters now, in manifest order.
    pub fn snapshot(&self) -> Vec<NodeStats> {
        self.nodes
            .iter()
            .map(|n| NodeStats {
                id: n.id.clone(),
                calls: n.calls.load(Ordering::Relaxed),
                total: Duration::from_nanos(n.nanos.load(Ordering::Relaxed)),
                latency: n.latency.snapshot(),
            })
            .collect()
    }
}

/// Whether a task should keep going after a send.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Sends `env` to every target, cloning for all but the last, waiting for room in each.
/// A target whose receiver is gone (its task ended, or the session output was dropped) is
/// removed; with none left, or on cancel, the caller stops.
async fn fan_out(
    targets: &mut Vec<mpsc::Sender<Envelope>>,
    env: Envelope,
    cancel: &CancellationToken,
) -> Flow {
    let count = targets.len();
    let mut env = Some(env);
    let mut gone = Vec::new();
    for (k, tx) in targets.iter().enumerate() {
        let item = if k + 1 == count {
            env.take()
        } else {
            env.clone()
        };
        let Some(item) = item else { break };
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Flow::Stop,
            sent = tx.send(item) => if sent.is_err() { gone.push(k) },
        }
    }
    for k in gone.into_iter().rev() {
        targets.remove(k);
    }
    if targets.is_empty() {
        Flow::Stop
    } else {
        Flow::Continue
    }
}

/// Completes once no target is left to send to (the session output was dropped), so a
/// session whose consumer left ends without waiting for its next input.
async fn all_closed(targets: &[mpsc::Sender<Envelope>]) {
    for tx in targets {
        tx.closed().await;
    }
}

/// Copies each session input to every source node (or straight to the output for loopback).
async fn forward_input(
    mut input: InputReceiver,
    mut targets: Vec<mpsc::Sender<Envelope>>,
    cancel: CancellationToken,
) {
    loop {
        let env = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = all_closed(&targets) => return,
            env = input.recv() => env,
        };
        match env {
            Some(env) => {
                if fan_out(&mut targets, env, &cancel).await == Flow::Stop {
                    return;
                }
            }
            None => return,
        }
    }
}

/// The thin async shell around one sans-IO node.
struct NodeTask {
    id: String,
    index: usize,
    node: Box<dyn Node>,
    /// For an offloaded node, its jobs and their replies.
    offloading: Option<Offloading>,
    targets: Vec<mpsc::Sender<Envelope>>,
    cancel: CancellationToken,
    stats: Arc<PipelineStats>,
    /// The session's output playback: offloaded nodes are told whether it speaks and may
    /// flush it.
    playback: Playback,
    /// The process-wide latency histogram of this node's type.
    latency: prometheus::Histogram,
}

/// The runner's side of an offloaded node: the executor its jobs go to and the channel their
/// outcomes come back on.
struct Offloading {
    executor: Arc<dyn Executor>,
    /// This node of this session, for the executor (whose queue drops by owner and utterance).
    owner: u64,
    /// Jobs submitted whose outcome has not come back yet.
    in_flight: usize,
    reply: Reply,
    results: mpsc::Receiver<Completed>,
    /// Where async jobs pass on their outputs while they run.
    chunks_tx: mpsc::Sender<Chunk>,
    chunks: mpsc::Receiver<Chunk>,
    /// The node's async jobs: aborted when the node's task ends.
    running: tokio::task::JoinSet<()>,
    /// Jobs taken from the node, reused.
    jobs: Vec<Job>,
    async_jobs: Vec<AsyncJob>,
}

impl Offloading {
    fn new(executor: Arc<dyn Executor>) -> Self {
        static OWNERS: AtomicU64 = AtomicU64::new(1);
        let (tx, results) = mpsc::channel(MAX_JOBS_IN_FLIGHT);
        let (chunks_tx, chunks) = mpsc::channel(CHUNK_QUEUE);
        Self {
            executor,
            owner: OWNERS.fetch_add(1, Ordering::Relaxed),
            in_flight: 0,
            reply: Reply(tx),
            results,
            chunks_tx,
            chunks,
            running: tokio::task::JoinSet::new(),
            jobs: Vec::new(),
            async_jobs: Vec::new(),
        }
    }
}

/// Chunks an offloaded node's async jobs may have passed on and the node not yet taken.
const CHUNK_QUEUE: usize = 16;

/// What woke a node's task.
enum Event {
    Input(Envelope),
    /// Every upstream has ended.
    End,
    Completed(Completed),
    Chunk(Chunk),
    Tick,
}

/// The next item on `rx` (never, without one: a plain node).
async fn next_from<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl NodeTask {
    async fn run(mut self, mut input: mpsc::Receiver<Envelope>) {
        let mut out = Vec::new();
        let mut input_open = true;
        loop {
            let tick = self.node.offload().and_then(|node| node.next_tick());
            let waiting = self.offloading.as_ref().is_some_and(|o| o.in_flight > 0);
            if !input_open && !waiting && tick.is_none() {
                // Every upstream has ended and nothing is owed: flush, then end, which closes
                // our successors' input.
                if let Err(error) = self.node.finish(&mut out) {
                    tracing::warn!(node = %self.id, %error, end = true, "node failed; input skipped");
                    out.clear();
                }
                for env in out.drain(..) {
                    if fan_out(&mut self.targets, env, &self.cancel).await == Flow::Stop {
                        return;
                    }
                }
                return;
            }
            let (chunks, results) = match self.offloading.as_mut() {
                Some(o) => (Some(&mut o.chunks), Some(&mut o.results)),
                None => (None, None),
            };
            let event = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return,
                () = all_closed(&self.targets) => return,
                // Before completions: a job's chunks were sent before its outcome.
                Some(chunk) = next_from(chunks), if waiting => Event::Chunk(chunk),
                Some(done) = next_from(results), if waiting => Event::Completed(done),
                () = tokio::time::sleep_until(tick.unwrap_or_else(tokio::time::Instant::now)), if tick.is_some() => Event::Tick,
                env = input.recv(), if input_open => env.map_or(Event::End, Event::Input),
            };
            let started = Instant::now();
            let result = match event {
                Event::End => {
                    input_open = false;
                    continue;
                }
                Event::Input(env) => {
                    // A node that works on audio takes a 1-D numpy array as audio.
                    let env = if self.node.wants_audio() {
                        env.numpy_as_audio().unwrap_or(env)
                    } else {
                        env
                    };
                    if !self.node.accepts(&env.data) {
                        continue;
                    }
                    if let Some(node) = self.node.offload() {
                        let now = tokio::time::Instant::now();
                        node.input_at(now);
                        node.output_speaking(self.playback.speaking(now));
                    }
                    self.node.process(env, &mut out)
                }
                Event::Chunk(chunk) => {
                    let now = tokio::time::Instant::now();
                    match self.node.offload() {
                        Some(node) => node.chunk(chunk, now, &mut out),
                        None => Ok(()),
                    }
                }
                Event::Completed(done) => {
                    if let Some(offloading) = self.offloading.as_mut() {
                        offloading.in_flight = offloading.in_flight.saturating_sub(1);
                        // Reaps the finished async jobs' tasks.
                        while offloading.running.try_join_next().is_some() {}
                    }
                    let now = tokio::time::Instant::now();
                    match self.node.offload() {
                        Some(node) => node.complete(done, now, &mut out),
                        None => Ok(()),
                    }
                }
                Event::Tick => {
                    let now = tokio::time::Instant::now();
                    match self.node.offload() {
                        Some(node) => node.tick(now, &mut out),
                        None => Ok(()),
                    }
                }
            };
            let elapsed = started.elapsed();
            self.stats.record(self.index, elapsed);
            self.latency.observe(elapsed.as_secs_f64());
            if let Err(error) = result {
                tracing::warn!(node = %self.id, %error, end = false, "node failed; input skipped");
                out.clear();
            }
            // Before this call's outputs travel: what the node says after an interruption
            // must not be flushed with the speech it cut.
            if self.node.offload().is_some_and(|node| node.take_flush()) {
                self.playback.flush();
            }
            self.submit_jobs(&mut out);
            for env in out.drain(..) {
                if fan_out(&mut self.targets, env, &self.cancel).await == Flow::Stop {
                    return;
                }
            }
        }
    }

    /// Hands the jobs the node made to the executor. Beyond [`MAX_JOBS_IN_FLIGHT`] a job is
    /// dropped at once (counted), and the node is told as it would be of any drop.
    fn submit_jobs(&mut self, out: &mut Vec<Envelope>) {
        let (Some(offloading), Some(node)) = (self.offloading.as_mut(), self.node.offload()) else {
            return;
        };
        node.take_jobs(&mut offloading.jobs);
        node.take_async_jobs(&mut offloading.async_jobs);
        let mut refused = Vec::new();
        for job in offloading.jobs.drain(..) {
            if !admit(
                &mut offloading.in_flight,
                job.id,
                job.utterance,
                &mut refused,
            ) {
                continue;
            }
            offloading
                .executor
                .submit(offloading.owner, job, offloading.reply.clone());
        }
        for job in offloading.async_jobs.drain(..) {
            if !admit(
                &mut offloading.in_flight,
                job.id,
                job.utterance,
                &mut refused,
            ) {
                continue;
            }
            let progress = Progress {
                id: job.id,
                utterance: job.utterance,
                tx: offloading.chunks_tx.clone(),
            };
            let reply = offloading.reply.clone();
            let (id, utterance, work) = (job.id, job.utterance, job.work);
            offloading.running.spawn(async move {
                let outcome = Outcome::Ran(work(progress).await);
                // Waits for room (there is: the node has room for every job it may have
                // outstanding), so the outcome of a job that streamed is never lost.
                let _ = reply
                    .0
                    .send(Completed {
                        id,
                        utterance,
                        outcome,
                    })
                    .await;
            });
        }
        if refused.is_empty() {
            return;
        }
        count_dropped(DropReason::Backlog, refused.len() as u64);
        let now = tokio::time::Instant::now();
        for done in refused {
            // Jobs it makes in answer go out with its next call.
            if let Err(error) = node.complete(done, now, out) {
                tracing::warn!(node = %self.id, %error, "node failed on a dropped job");
            }
        }
    }
}

/// Counts a job in flight, or, beyond [`MAX_JOBS_IN_FLIGHT`], adds it to `refused` as
/// dropped for the backlog. Returns whether it was admitted.
fn admit(in_flight: &mut usize, id: JobId, utterance: u64, refused: &mut Vec<Completed>) -> bool {
    if *in_flight >= MAX_JOBS_IN_FLIGHT {
        refused.push(Completed {
            id,
            utterance,
            outcome: Outcome::Dropped(DropReason::Backlog),
        });
        return false;
    }
    *in_flight += 1;
    true
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "offload_tests.rs"]
mod offload_tests;
