//! The asynchronous reviewing pipeline: upload → analyze → review → index →
//! published, needs_review or rejected, with nothing lost when a worker dies.
//!
//! - [`photo`], [`rules`], [`event`], [`job`]: re-exported from the
//!   `domain` crate: statuses and history, the review rules, the typed
//!   events, jobs and the retry policy.
//! - [`store`]: photo records, dead letters and the event log — SQLite
//!   embedded, PostgreSQL scaled out.
//! - [`queue`]: the work queue — a SQLite table embedded, NATS JetStream
//!   scaled out — and where the event log is read.
//! - [`config`]: the `[pipeline]`, `[metadata]` and `[queue]` sections.
//! - [`service`]: [`Pipeline`], the handles the API and the workers share,
//!   and the API's operations (upload, list, review decisions, retries).
//! - [`worker`]: pulls jobs, runs the stages, delivers callbacks.
//! - [`concepts`]: concepts trained from example photos — the API's
//!   operations, the training and backfill jobs, and the watcher that
//!   serves the active versions in every process.
//! - [`aesthetics`]: personal aesthetic heads learned from people's
//!   feedback — the training job and the watcher that serves them.
//! - [`callback`]: callback URLs checked at upload and at delivery, so
//!   they never reach private networks.
//! - [`synthetic`]: the synthetic analyzer, a benchmark-only load mode that
//!   takes the models out of a measurement of the control plane.

pub mod aesthetics;
pub mod callback;
pub mod concepts;
pub mod config;
pub mod queue;
pub mod service;
pub mod store;
pub mod synthetic;
pub mod worker;

// The photo, event, job and rule types live in the `domain` crate (no
// runtime, no I/O), so the lake and the reports can use them without the
// pipeline's databases; re-exported here under their old paths.
pub use domain::{analysis, concept, event, feedback, job, photo, rules, stage};

pub use callback::CallbackConfig;
pub use config::{MetadataConfig, PipelineConfig, QueueConfig};
pub use domain::stage::{Analyze, Analyzed, StageError};
pub use event::{Event, EventKind, LoggedEvent};
pub use job::{DeadJob, Job, JobKind, RetryPolicy};
pub use photo::{NewPhoto, PhotoRecord, Status, Transition};
pub use queue::{Delivery, EventLog, JobQueue, QueueError, QueueSettings};
pub use rules::{Decision, Reason, Review, ReviewRules, RulesError, Uploader};
pub use service::{original_key, Pipeline, PipelineError, PipelineOptions, ReviewDecision};
pub use store::{MetaStore, StoreError};
pub use worker::{Worker, WorkerObserver};
