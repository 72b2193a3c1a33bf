//! The dynamic batcher: requests for one model wait in a bounded queue and are
//! run together, up to `max_batch_size` at a time, by dedicated instance
//! threads that never block the async runtime.
//!
//! - Admission is decided before queueing: a full queue refuses at once with
//!   [`BatchError::Overloaded`] (the HTTP layer turns it into 429/503 with
//!   `Retry-After`); nothing is ever queued without bound.
//! - A batch closes when it is full or when its first request has waited
//!   `max_queue_delay`, whichever comes first.
//! - A request whose caller has gone away (its future dropped) is skipped
//!   before inference.
//! - Dropping the [`Batcher`] is a graceful shutdown: what was admitted is
//!   still answered, then the instance threads exit.
//!
//! The model is a narrow sync trait ([`BatchModel`]), so the batcher is tested
//! with fakes and driven by the real analyzer in the service.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Runs one batch. Sync and allowed to block: it runs on an instance thread.
pub trait BatchModel: Send + Sync + 'static {
    type Input: Send + 'static;
    type Output: Send + 'static;
    /// One output per input, in order; an error fails the whole batch.
    fn run(&self, batch: Vec<Self::Input>) -> Result<Vec<Self::Output>, String>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Most requests run together.
    pub max_batch_size: usize,
    /// Longest a batch's first request waits for company.
    pub max_queue_delay: Duration,
    /// Requests admitted but not yet taken into a batch; beyond this, refuse.
    pub queue_capacity: usize,
    /// Threads running batches in parallel (model instances).
    pub instances: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_batch_size: 16,
            max_queue_delay: Duration::from_millis(5),
            queue_capacity: 256,
            instances: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The queue is full: try again after `retry_after`.
    #[error("the model queue is full; retry after {retry_after:?}")]
    Overloaded { retry_after: Duration },
    /// The batcher is shutting down.
    #[error("the batcher has shut down")]
    Closed,
    /// The model failed (or panicked) on the batch this request was in.
    #[error("inference failed: {0}")]
    Model(String),
}

impl BatchError {
    /// A stable snake_case code for APIs.
    pub fn code(&self) -> &'static str {
        match self {
            BatchError::Overloaded { .. } => "overloaded",
            BatchError::Closed => "shutting_down",
            BatchError::Model(_) => "inference_failed",
        }
    }
}

/// Counters for metrics, read with [`Batcher::stats`].
#[derive(Debug, Default)]
struct Counters {
    queued: AtomicUsize,
    rejected: AtomicU64,
    cancelled: AtomicU64,
    batches: AtomicU64,
    items: AtomicU64,
    /// Moving average of a batch's run time in microseconds (0: none yet),
    /// for the `Retry-After` estimate.
    batch_micros: AtomicU64,
}

/// What one batch did, handed to the observer (the service's metrics).
#[derive(Debug)]
pub struct BatchRecord<'a> {
    /// Requests run together.
    pub size: usize,
    /// How long each request waited between admission and the batch starting.
    pub queue_waits: &'a [Duration],
    /// The model's run time for the whole batch.
    pub run_time: Duration,
    pub failed: bool,
}

/// Called on the instance thread after every batch; keep it cheap.
pub type Observer = Arc<dyn Fn(&BatchRecord<'_>) + Send + Sync>;

/// A snapshot of the batcher's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Admitted requests not yet in a batch.
    pub queued: usize,
    pub rejected: u64,
    pub cancelled: u64,
    pub batches: u64,
    /// Requests run; `items / batches` is the mean batch size.
    pub items: u64,
}

struct Job<I, O> {
    input: I,
    admitted: Instant,
    reply: oneshot::Sender<Result<O, BatchError>>,
}

/// The handle callers submit through. Cheap to share behind an `Arc`.
pub struct Batcher<M: BatchModel> {
    /// Bounded: `try_send` is the admission decision. `None` once shut down.
    queue: Option<SyncSender<Job<M::Input, M::Output>>>,
    config: BatcherConfig,
    counters: Arc<Counters>,
    /// Instance threads, joined on drop so shutdown finishes admitted work.
    instances: Vec<JoinHandle<()>>,
}

impl<M: BatchModel> Batcher<M> {
    pub fn spawn(model: Arc<M>, config: BatcherConfig) -> Batcher<M> {
        Batcher::spawn_observed(model, config, Arc::new(|_: &BatchRecord<'_>| {}))
    }

    /// Like [`Self::spawn`], calling `observer` after every batch.
    pub fn spawn_observed(model: Arc<M>, config: BatcherConfig, observer: Observer) -> Batcher<M> {
        let config = BatcherConfig {
            max_batch_size: config.max_batch_size.max(1),
            queue_capacity: config.queue_capacity.max(1),
            instances: config.instances.max(1),
            ..config
        };
        let (tx, rx) = sync_channel(config.queue_capacity);
        // Instances share the receiver: one forms a batch at a time while the
        // others run theirs.
        let rx = Arc::new(Mutex::new(rx));
        let counters = Arc::new(Counters::default());
        let instances = (0..config.instances)
            .map(|i| {
                let (model, rx, counters, config, observer) = (
                    model.clone(),
                    rx.clone(),
                    counters.clone(),
                    config.clone(),
                    observer.clone(),
                );
                std::thread::Builder::new()
                    .name(format!("batcher-{i}"))
                    .spawn(move || instance(&*model, &rx, &counters, &config, &*observer))
                    .expect("spawn a batcher thread")
            })
            .collect();
        Batcher {
            queue: Some(tx),
            config,
            counters,
            instances,
        }
    }

    /// Admits the request or refuses it at once, then waits for its result.
    /// Dropping the returned future cancels the request: it is skipped if it
    /// has not reached the model yet.
    pub async fn submit(&self, input: M::Input) -> Result<M::Output, BatchError> {
        let receiver = self.admit(input)?;
        receiver.await.unwrap_or(Err(BatchError::Closed))
    }

    /// The admission step of [`Self::submit`], for callers that are not async.
    pub fn admit(
        &self,
        input: M::Input,
    ) -> Result<oneshot::Receiver<Result<M::Output, BatchError>>, BatchError> {
        let queue = self.queue.as_ref().ok_or(BatchError::Closed)?;
        let (reply, receiver) = oneshot::channel();
        // Counted before sending so the instance's decrement never underflows.
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            input,
            admitted: Instant::now(),
            reply,
        };
        match queue.try_send(job) {
            Ok(()) => Ok(receiver),
            Err(e) => {
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => {
                        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                        Err(BatchError::Overloaded {
                            retry_after: self.retry_after(),
                        })
                    }
                    TrySendError::Disconnected(_) => Err(BatchError::Closed),
                }
            }
        }
    }

    /// A full queue drains in about (queue / batch size / instances) batch
    /// times; rounded up to whole seconds, at least one (`Retry-After`'s unit).
    pub fn retry_after(&self) -> Duration {
        let c = &self.config;
        let batch = Duration::from_micros(self.counters.batch_micros.load(Ordering::Relaxed));
        let batches = c.queue_capacity.div_ceil(c.max_batch_size * c.instances) as u32;
        let drain = (batch + c.max_queue_delay) * batches;
        Duration::from_secs(drain.as_secs_f64().ceil().max(1.0) as u64)
    }

    pub fn config(&self) -> &BatcherConfig {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            queued: c.queued.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            items: c.items.load(Ordering::Relaxed),
        }
    }
}

impl<M: BatchModel> Drop for Batcher<M> {
    /// Closes the queue; the instances answer everything admitted, then exit.
    fn drop(&mut self) {
        self.queue.take();
        for handle in self.instances.drain(..) {
            let _ = handle.join();
        }
    }
}

type Queue<I, O> = Mutex<Receiver<Job<I, O>>>;

/// One instance thread: form a batch, run it, answer, until the queue closes.
fn instance<M: BatchModel>(
    model: &M,
    queue: &Queue<M::Input, M::Output>,
    counters: &Counters,
    config: &BatcherConfig,
    observer: &(dyn Fn(&BatchRecord<'_>) + Send + Sync),
) {
    while let Some(batch) = next_batch(queue, counters, config) {
        let started = Instant::now();
        let queue_waits: Vec<Duration> = batch
            .iter()
            .map(|job| started.saturating_duration_since(job.admitted))
            .collect();
        let (inputs, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|job| (job.input, job.reply)).unzip();
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .items
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        let n = inputs.len();
        // A panicking model fails its batch, not the batcher.
        let outcome = match catch_unwind(AssertUnwindSafe(|| model.run(inputs))) {
            Ok(Ok(outputs)) if outputs.len() == n => Ok(outputs),
            Ok(Ok(outputs)) => Err(format!(
                "the model returned {} outputs for {n} inputs",
                outputs.len()
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the model panicked".to_string()),
        };
        let run_time = started.elapsed();
        let micros = run_time.as_micros().min(u64::MAX as u128) as u64;
        let average = counters.batch_micros.load(Ordering::Relaxed);
        let average = if average == 0 {
            micros
        } else {
            (average * 7 + micros) / 8
        };
        counters.batch_micros.store(average, Ordering::Relaxed);
        observer(&BatchRecord {
            size: n,
            queue_waits: &queue_waits,
            run_time,
            failed: outcome.is_err(),
        });
        match outcome {
            Ok(outputs) => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(BatchError::Model(e.clone())));
                }
            }
        }
    }
}

/// Waits for a first request, then gathers more until the batch is full or
/// the first has waited `max_queue_delay`. `None` once the queue is closed
/// and drained. Cancelled requests are dropped here, before inference.
fn next_batch<I, O>(
    queue: &Queue<I, O>,
    counters: &Counters,
    config: &BatcherConfig,
) -> Option<Vec<Job<I, O>>> {
    let rx = queue.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let first = rx.recv().ok()?;
        counters.queued.fetch_sub(1, Ordering::Relaxed);
        let deadline = Instant::now() + config.max_queue_delay;
        let mut batch = vec![first];
        while batch.len() < config.max_batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            let job = if left.is_zero() {
                // Past the deadline: take only what is already waiting.
                match rx.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            } else {
                match rx.recv_timeout(left) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            };
            counters.queued.fetch_sub(1, Ordering::Relaxed);
            batch.push(job);
        }
        let before = batch.len();
        batch.retain(|job| !job.reply.is_closed());
        counters
            .cancelled
            .fetch_add((before - batch.len()) as u64, Ordering::Relaxed);
        if !batch.is_empty() {
            return Some(batch);
        }
    }
}
