//! The work queue: at-least-once delivery with leases, retries with
//! backoff, and a dead-letter path.
//!
//! - Embedded ([`sqlite`]): a `jobs` table in the metadata SQLite file.
//!   `pull` leases rows (`leased_until = now + lease`); a lease that runs out
//!   (the worker died) makes the job deliverable again.
//! - Scaled out ([`nats`]): a JetStream work-queue stream with a durable
//!   pull consumer: explicit ack, `ack_wait = lease`, `max_deliver`, NAK with
//!   a delay for retries, and a dead-letter stream.
//!
//! Both count deliveries: `Delivery::attempt` is 1 on the first. Both are
//! checked by the conformance suite in `tests/backends.rs`.

pub mod nats;
pub mod sqlite;

use std::time::Duration;

use crate::config::QueueConfig;
use crate::event::LoggedEvent;
use crate::job::{DeadJob, Job};
use crate::store::MetaStore;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue cannot be reached right now: worth retrying.
    #[error("work queue unavailable: {0}")]
    Unavailable(String),
    #[error("work queue error: {0}")]
    Backend(String),
    #[error("work queue config: {0}")]
    Config(String),
}

impl QueueError {
    pub fn code(&self) -> &'static str {
        match self {
            QueueError::Unavailable(_) => "queue_unavailable",
            QueueError::Backend(_) => "queue_error",
            QueueError::Config(_) => "queue_config_invalid",
        }
    }
}

pub type QueueResult<T> = Result<T, QueueError>;

/// Settings both queues take from `[pipeline]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSettings {
    /// How long a delivery is held before it is redelivered.
    pub lease: Duration,
    /// Deliveries after which the queue stops delivering a job; the worker
    /// dead-letters a job on its last delivery without running it (it
    /// killed or hung every worker before). Set to retry.max_attempts + 1.
    pub max_deliver: u32,
}

/// A job handed to a worker. Settle it exactly once: `ack`, `retry`,
/// `release` or `dead`; dropped unsettled, it is redelivered when its lease
/// runs out.
#[derive(Debug)]
pub struct Delivery {
    pub job: Job,
    /// 1 on the first delivery.
    pub attempt: u32,
    pub(crate) handle: Handle,
}

// A JetStream message is a few hundred bytes; deliveries are as many as a
// worker's concurrency and short-lived, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Handle {
    Sqlite(sqlite::SqliteHandle),
    Nats(nats::NatsHandle),
}

#[derive(Clone)]
pub enum JobQueue {
    Sqlite(sqlite::SqliteQueue),
    Nats(nats::NatsQueue),
}

macro_rules! dispatch {
    ($self:ident, $q:ident => $call:expr) => {
        match $self {
            JobQueue::Sqlite($q) => $call,
            JobQueue::Nats($q) => $call,
        }
    };
}

impl JobQueue {
    /// Opens the queue (creating streams or tables if missing). The SQLite
    /// queue lives in `store`'s file, so `store` must be SQLite for it.
    pub async fn open(
        config: &QueueConfig,
        store: &MetaStore,
        settings: QueueSettings,
    ) -> QueueResult<JobQueue> {
        Ok(match (config, store) {
            (QueueConfig::Sqlite {}, MetaStore::Sqlite(s)) => {
                JobQueue::Sqlite(sqlite::SqliteQueue::open(s, settings).await?)
            }
            (QueueConfig::Sqlite {}, _) => {
                return Err(QueueError::Config(
                    "queue.kind = \"sqlite\" needs metadata.kind = \"sqlite\"".into(),
                ))
            }
            (QueueConfig::Nats { url, prefix }, _) => {
                JobQueue::Nats(nats::NatsQueue::open(url, prefix, settings).await?)
            }
        })
    }

    /// `sqlite` or `nats`.
    pub fn kind(&self) -> &'static str {
        match self {
            JobQueue::Sqlite(_) => "sqlite",
            JobQueue::Nats(_) => "nats",
        }
    }

    /// Enqueues a job. A job whose id is already queued (and, for NATS,
    /// within the duplicate window) is not queued twice.
    pub async fn push(&self, job: &Job) -> QueueResult<()> {
        dispatch!(self, q => q.push(job).await)
    }

    /// Up to `max` deliverable jobs, waiting at most `wait` for the first.
    /// Empty on timeout.
    pub async fn pull(&self, max: usize, wait: Duration) -> QueueResult<Vec<Delivery>> {
        dispatch!(self, q => q.pull(max, wait).await)
    }

    /// Done: the job leaves the queue.
    pub async fn ack(&self, delivery: Delivery) -> QueueResult<()> {
        dispatch!(self, q => q.ack(delivery).await)
    }

    /// Failed: deliver again after `after` (the attempt counts).
    pub async fn retry(&self, delivery: Delivery, after: Duration) -> QueueResult<()> {
        dispatch!(self, q => q.retry(delivery, after).await)
    }

    /// Not run (the worker is draining): deliver again now.
    pub async fn release(&self, delivery: Delivery) -> QueueResult<()> {
        dispatch!(self, q => q.release(delivery).await)
    }

    /// Given up: the job leaves the queue. The caller has recorded `dead` in
    /// the metadata store; NATS also publishes it to the dead-letter stream.
    pub async fn dead(&self, delivery: Delivery, dead: &DeadJob) -> QueueResult<()> {
        dispatch!(self, q => q.dead(delivery, dead).await)
    }

    /// Jobs queued (deliverable, leased, or waiting for a retry).
    pub async fn depth(&self) -> QueueResult<u64> {
        dispatch!(self, q => q.depth().await)
    }
}

/// Where the event log is read from: the SQLite `events` table embedded,
/// the `<prefix>_EVENTS` stream when the queue is NATS.
#[derive(Clone)]
pub enum EventLog {
    Store(MetaStore),
    Nats(nats::NatsEvents),
}

impl EventLog {
    /// Events with `seq > after`, ascending, at most `limit`.
    pub async fn read(&self, after: u64, limit: usize) -> QueueResult<Vec<LoggedEvent>> {
        match self {
            EventLog::Store(store) => store
                .read_events(after, limit)
                .await
                .map_err(|e| QueueError::Backend(e.to_string())),
            EventLog::Nats(events) => events.read(after, limit).await,
        }
    }

    /// The last event's seq (0: none yet): a reader that has just read the
    /// metadata store whole goes on from here.
    pub async fn head(&self) -> QueueResult<u64> {
        match self {
            EventLog::Store(store) => store
                .last_event_seq()
                .await
                .map_err(|e| QueueError::Backend(e.to_string())),
            EventLog::Nats(events) => events.head().await,
        }
    }

    /// Names the log, so a reader's saved position is not used on another.
    pub fn name(&self) -> String {
        match self {
            EventLog::Store(store) => format!("{}-events", store.kind()),
            EventLog::Nats(events) => format!("nats:{}", events.stream_name()),
        }
    }
}
