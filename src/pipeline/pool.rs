//! The offload pool: one per process, a few OS threads of its own and one bounded queue, where
//! offloaded nodes' blocking work runs (speech engines' subprocesses, models), never on the
//! async runtime's threads (DESIGN.md §4).
//!
//! Jobs run in the order they came. A full queue drops its oldest utterance: every queued job
//! of the owner and utterance at its head, each told [`DropReason::QueueFull`] and counted, so
//! the newest speech is the one that is spoken, and the media path never waits for the pool.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::error::NodeError;
use super::metrics::metrics;
use super::offload::{count_dropped, Completed, DropReason, Executor, Job, Outcome, Reply};

/// Jobs the process's pool queues at most (beyond the ones running).
pub const DEFAULT_QUEUE: usize = 64;

/// A bounded queue of blocking jobs and the threads that run them.
#[derive(Debug)]
pub struct BlockingPool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is queued or the pool stops.
    available: Condvar,
    /// Jobs queued at most.
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Set when the pool is dropped: threads finish the queue, then end.
    stopping: bool,
}

#[derive(Debug)]
struct Queued {
    owner: u64,
    job: Job,
    reply: Reply,
    queued_at: Instant,
}

impl Queued {
    fn dropped(self, reason: DropReason) {
        self.reply.send(Completed {
            id: self.job.id,
            utterance: self.job.utterance,
            outcome: Outcome::Dropped(reason),
        });
    }
}

impl BlockingPool {
    /// A pool of `threads` threads (at least one) queuing `capacity` jobs (at least one).
    ///
    /// # Errors
    /// When the OS refuses a thread.
    pub fn new(threads: usize, capacity: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            available: Condvar::new(),
            capacity: capacity.max(1),
        });
        for index in 0..threads.max(1) {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("rm-offload-{index}"))
                .spawn(move || shared.work())?;
        }
        Ok(Self { shared })
    }

    /// The process's pool: a thread per core, [`DEFAULT_QUEUE`] jobs queued. Created on first
    /// use (the first session of a pipeline with an offloaded node).
    ///
    /// # Errors
    /// When the OS refuses its threads (then every later call fails the same way).
    pub fn global() -> Result<Arc<BlockingPool>, NodeError> {
        static GLOBAL: LazyLock<Result<Arc<BlockingPool>, String>> = LazyLock::new(|| {
            let threads = std::thread::available_parallelism().map_or(2, usize::from);
            let pool = BlockingPool::new(threads, DEFAULT_QUEUE).map_err(|e| e.to_string())?;
            metrics().offload_threads.set(threads as i64);
            Ok(Arc::new(pool))
        });
        GLOBAL
            .as_ref()
            .map(Arc::clone)
            .map_err(|err| NodeError::Input(format!("cannot start the offload pool: {err}")))
    }
}

impl Drop for BlockingPool {
    fn drop(&mut self) {
        self.shared.state.lock().stopping = true;
        self.shared.available.notify_all();
    }
}

impl Executor for BlockingPool {
    fn submit(&self, owner: u64, job: Job, reply: Reply) {
        let mut dropped = Vec::new();
        {
            let mut state = self.shared.state.lock();
            if state.queue.len() >= self.shared.capacity {
                // The oldest utterance goes, all of it that is still queued.
                if let Some(head) = state.queue.front() {
                    let key = (head.owner, head.job.utterance);
                    let (gone, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut state.queue)
                        .into_iter()
                        .partition(|q| (q.owner, q.job.utterance) == key);
                    state.queue = kept;
                    dropped.extend(gone);
                }
            }
            state.queue.push_back(Queued {
                owner,
                job,
                reply,
                queued_at: Instant::now(),
            });
            metrics().offload_queue_depth.set(state.queue.len() as i64);
        }
        self.shared.available.notify_one();
        if !dropped.is_empty() {
            count_dropped(DropReason::QueueFull, dropped.len() as u64);
            tracing::debug!(
                jobs = dropped.len(),
                "offload queue full: oldest utterance dropped"
            );
        }
        for queued in dropped {
            queued.dropped(DropReason::QueueFull);
        }
    }
}

impl Shared {
    /// One pool thread: takes the oldest job, runs it, replies; until the pool stops.
    fn work(&self) {
        loop {
            let queued = {
                let mut state = self.state.lock();
                loop {
                    if let Some(queued) = state.queue.pop_front() {
                        metrics().offload_queue_depth.set(state.queue.len() as i64);
                        break queued;
                    }
                    if state.stopping {
                        return;
                    }
                    self.available.wait(&mut state);
                }
            };
            let m = metrics();
            m.offload_wait_seconds
                .observe(queued.queued_at.elapsed().as_secs_f64());
            let started = Instant::now();
            let Queued { job, reply, .. } = queued;
            // A job that panics fails alone: the thread and the pool go on.
            let result = catch_unwind(AssertUnwindSafe(job.work))
                .unwrap_or_else(|_| Err(NodeError::Input("offloaded job panicked".to_owned())));
            m.offload_busy_seconds
                .inc_by(started.elapsed().as_secs_f64());
            let label = if result.is_ok() { "ok" } else { "failed" };
            m.offload_jobs.with_label_values(&[label]).inc();
            reply.send(Completed {
                id: job.id,
                utterance: job.utterance,
                outcome: Outcome::Ran(result),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::data::{Envelope, RuntimeData};
    use std::time::Duration;
    use tokio::sync::mpsc;

    fn text(s: &str) -> Envelope {
        Envelope::new(RuntimeData::Text {
            text: s.into(),
            language: String::new(),
        })
    }

    /// A job that waits for `gate` before answering `text`.
    fn job(id: u64, utterance: u64, gate: Option<std::sync::mpsc::Receiver<()>>) -> Job {
        Job {
            id,
            utterance,
            work: Box::new(move || {
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
                Ok(vec![text(&id.to_string())])
            }),
        }
    }

    fn reply(capacity: usize) -> (Reply, mpsc::Receiver<Completed>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Reply(tx), rx)
    }

    #[tokio::test]
    async fn jobs_run_off_the_runtime_and_come_back() {
        let pool = BlockingPool::new(2, 8).unwrap();
        let (reply, mut rx) = reply(8);
        let runtime_thread = std::thread::current().id();
        pool.submit(
            1,
            Job {
                id: 7,
                utterance: 1,
                work: Box::new(move || {
                    assert_ne!(std::thread::current().id(), runtime_thread);
                    Ok(vec![text("done")])
                }),
            },
            reply,
        );
        let done = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.id, 7);
        assert!(matches!(done.outcome, Outcome::Ran(Ok(ref out)) if out.len() == 1));
    }

    #[tokio::test]
    async fn a_full_queue_drops_its_oldest_utterance_whole() {
        // One thread, held by a gated job, and room for three queued jobs.
        let pool = BlockingPool::new(1, 3).unwrap();
        let (reply, mut rx) = reply(16);
        let (open, gate) = std::sync::mpsc::channel();
        pool.submit(1, job(0, 0, Some(gate)), reply.clone());
        // Let the thread take the gated job before queuing behind it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let dropped_before = metrics()
            .offload_dropped
            .with_label_values(&["queue_full"])
            .get();
        // Utterance 1 (two sentences) and utterance 2 (one) fill the queue.
        pool.submit(1, job(1, 1, None), reply.clone());
        pool.submit(1, job(2, 1, None), reply.clone());
        pool.submit(1, job(3, 2, None), reply.clone());
        // Utterance 3 makes room: both of utterance 1's jobs go.
        pool.submit(1, job(4, 3, None), reply.clone());
        let mut dropped = Vec::new();
        for _ in 0..2 {
            let done = rx.recv().await.unwrap();
            assert!(matches!(
                done.outcome,
                Outcome::Dropped(DropReason::QueueFull)
            ));
            dropped.push(done.id);
        }
        assert_eq!(dropped, [1, 2]);
        assert!(
            metrics()
                .offload_dropped
                .with_label_values(&["queue_full"])
                .get()
                >= dropped_before + 2
        );
        open.send(()).unwrap();
        let mut ran = Vec::new();
        for _ in 0..3 {
            let done = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(matches!(done.outcome, Outcome::Ran(Ok(_))));
            ran.push(done.id);
        }
        assert_eq!(ran, [0, 3, 4], "the rest ran in order");
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let pool = BlockingPool::new(1, 4).unwrap();
        let (reply, mut rx) = reply(4);
        pool.submit(
            1,
            Job {
                id: 1,
                utterance: 1,
                work: Box::new(|| panic!("engine bug")),
            },
            reply.clone(),
        );
        pool.submit(1, job(2, 2, None), reply);
        let first = rx.recv().await.unwrap();
        assert!(matches!(first.outcome, Outcome::Ran(Err(_))));
        let second = rx.recv().await.unwrap();
        assert!(matches!(second.outcome, Outcome::Ran(Ok(_))));
    }
}
