//! Offloaded nodes: work that waits (a speech engine's subprocess, a model, an HTTP call) or
//! runs on a clock, kept off the async runtime's threads (DESIGN.md §4, docs/pipelines.md).
//!
//! The node stays sans-IO. Besides its outputs, any call may leave [`Job`]s for the runner to
//! take ([`Offload::take_jobs`]); the runner hands each to the process's [`Executor`] (the
//! bounded [`super::BlockingPool`]), and each job's [`Completed`] comes back to the node later
//! as an input ([`Offload::complete`]), exactly once, whether it ran or was dropped. A node may
//! also ask for a tick at an instant ([`Offload::next_tick`]): the runner sleeps until then
//! and calls [`Offload::tick`] with the time, and it is told the time of each input
//! ([`Offload::input_at`]). The time is always given, never read, so a node is tested with
//! plain instants and the runner with paused tokio time.
//!
//! Work that waits on the network rather than a CPU (an HTTP call) is an [`AsyncJob`]
//! instead ([`Offload::take_async_jobs`]): a future the runner spawns on the async runtime, in
//! the node's own task set (so it ends with the session), counted with the node's jobs. It may
//! pass outputs on before it ends (a streamed response, chunk by chunk) through its
//! [`Progress`], a bounded channel that slows the stream to the node's pace; they reach the
//! node as [`Offload::chunk`], in order and before the job's [`Completed`].
//!
//! Overload never delays the media path: a full queue drops its oldest utterance (every job
//! of it still queued), and a node that has more work outstanding than it may drops its own
//! oldest utterance, each counted by reason in `remotemedia_pipeline_offload_dropped_total`.

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::data::Envelope;
use super::error::NodeError;

/// A job's number, unique within the node that made it.
pub type JobId = u64;

/// What a job runs: blocking work, on a pool thread. Its outputs come back to the node.
pub type Work = Box<dyn FnOnce() -> Result<Vec<Envelope>, NodeError> + Send>;

/// Work a node hands to the executor.
pub struct Job {
    pub id: JobId,
    /// Jobs of one utterance (one text to speak, one turn to transcribe) share it: overload
    /// drops whole utterances, never a sentence from the middle of one.
    pub utterance: u64,
    pub work: Work,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("utterance", &self.utterance)
            .finish_non_exhaustive()
    }
}

/// Work that waits on I/O: given its [`Progress`], the future the runner spawns.
pub type AsyncWork = Box<
    dyn FnOnce(Progress) -> futures::future::BoxFuture<'static, Result<Vec<Envelope>, NodeError>>
        + Send,
>;

/// An [`AsyncWork`] a node hands to the runner; its outcome comes back as any job's does.
pub struct AsyncJob {
    pub id: JobId,
    pub utterance: u64,
    pub work: AsyncWork,
}

impl std::fmt::Debug for AsyncJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncJob")
            .field("id", &self.id)
            .field("utterance", &self.utterance)
            .finish_non_exhaustive()
    }
}

/// Outputs an async job passed on before it ended.
#[derive(Debug)]
pub struct Chunk {
    pub id: JobId,
    pub utterance: u64,
    pub outputs: Vec<Envelope>,
}

/// An async job's way to pass outputs on while it runs.
#[derive(Debug, Clone)]
pub struct Progress {
    pub(super) id: JobId,
    pub(super) utterance: u64,
    pub(super) tx: mpsc::Sender<Chunk>,
}

impl Progress {
    /// Passes `outputs` to the node, waiting for room (a fast stream goes at the node's
    /// pace); false once the node is gone.
    pub async fn send(&self, outputs: Vec<Envelope>) -> bool {
        let chunk = Chunk {
            id: self.id,
            utterance: self.utterance,
            outputs,
        };
        self.tx.send(chunk).await.is_ok()
    }
}

/// What became of a job.
#[derive(Debug)]
pub enum Outcome {
    /// It ran: its outputs, or why it failed.
    Ran(Result<Vec<Envelope>, NodeError>),
    /// It never ran.
    Dropped(DropReason),
}

/// A job's outcome, back at the node that made it.
#[derive(Debug)]
pub struct Completed {
    pub id: JobId,
    pub utterance: u64,
    pub outcome: Outcome,
}

/// Why work was dropped (the `reason` label of `remotemedia_pipeline_offload_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The process's offload queue was full: its oldest utterance made room.
    QueueFull,
    /// A node had more work outstanding than it may hold: its oldest utterance made room.
    Backlog,
    /// The user spoke over the pipeline's speech: what was left to say went (barge-in).
    Interrupted,
}

impl DropReason {
    /// Every reason, so each shows at zero before it first happens.
    pub const ALL: [Self; 3] = [Self::QueueFull, Self::Backlog, Self::Interrupted];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Backlog => "backlog",
            Self::Interrupted => "interrupted",
        }
    }
}

/// Counts `jobs` jobs dropped for `reason`.
pub fn count_dropped(reason: DropReason, jobs: u64) {
    super::metrics::metrics()
        .offload_dropped
        .with_label_values(&[reason.label()])
        .inc_by(jobs);
}

/// The offloaded side of a node (see the module docs). Every method is called on the node's
/// own task, with the time where it matters; none may block.
pub trait Offload: Send {
    /// Moves the jobs this node has made since the last call into `jobs`.
    fn take_jobs(&mut self, jobs: &mut Vec<Job>);

    /// A job's outcome, at `now`; outputs go to `out` in the order they should travel.
    ///
    /// # Errors
    /// [`NodeError`] as [`super::Node::process`]: logged, this call's outputs discarded.
    fn complete(
        &mut self,
        done: Completed,
        now: Instant,
        out: &mut Vec<Envelope>,
    ) -> Result<(), NodeError>;

    /// The time an input arrives, told just before its [`super::Node::process`], for a node
    /// that times from its inputs (a turn detector's silence).
    fn input_at(&mut self, now: Instant) {
        let _ = now;
    }

    /// When this node next wants [`Offload::tick`]; `None` while it waits for nothing.
    fn next_tick(&self) -> Option<Instant> {
        None
    }

    /// The time asked for by [`Offload::next_tick`] has come (`now` is at or after it).
    ///
    /// # Errors
    /// As [`Offload::complete`].
    fn tick(&mut self, now: Instant, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let _ = (now, out);
        Ok(())
    }

    /// Moves the async jobs this node has made since the last call into `jobs`.
    fn take_async_jobs(&mut self, jobs: &mut Vec<AsyncJob>) {
        let _ = jobs;
    }

    /// Outputs an async job passed on while it runs, at `now`; by default they travel on.
    ///
    /// # Errors
    /// As [`Offload::complete`].
    fn chunk(
        &mut self,
        chunk: Chunk,
        now: Instant,
        out: &mut Vec<Envelope>,
    ) -> Result<(), NodeError> {
        let _ = now;
        out.extend(chunk.outputs);
        Ok(())
    }

    /// Whether the session's output is still playing pipeline audio (see
    /// [`super::playback`]), told just before each input, for a node that stops its speech
    /// when the user talks over it.
    fn output_speaking(&mut self, speaking: bool) {
        let _ = speaking;
    }

    /// Whether this node wants the session's output to drop the pipeline audio it holds
    /// (barge-in); asked after each call, before that call's outputs travel.
    fn take_flush(&mut self) -> bool {
        false
    }
}

/// Where a job's [`Completed`] goes: its node's task. The channel has room for every job the
/// node may have outstanding, so a reply never waits and never grows a queue.
#[derive(Debug, Clone)]
pub struct Reply(pub(super) mpsc::Sender<Completed>);

impl Reply {
    /// Delivers `done`; a node whose session ended is not told.
    pub fn send(&self, done: Completed) {
        let _ = self.0.try_send(done);
    }
}

/// Runs jobs away from the async runtime: the process's [`super::BlockingPool`], or a test's
/// own.
pub trait Executor: Send + Sync + std::fmt::Debug {
    /// Queues `job` of `owner` (one node of one session). `reply` gets exactly one
    /// [`Completed`] for it: its outputs once it ran, or [`Outcome::Dropped`]. Never blocks.
    fn submit(&self, owner: u64, job: Job, reply: Reply);
}
