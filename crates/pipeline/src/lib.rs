//! The asynchronous reviewing pipeline: upload → analyze → review → index →
//! published, needs_review or rejected, with nothing lost when a worker dies.
//!
//! - [`photo`]: the statuses, history and results of one photo.
//! - [`rules`]: the review rules that decide a photo's fate.
//! - [`event`]: the typed events every state change emits.
//! - [`job`]: jobs, the retry policy and dead letters.
//! - [`store`]: photo records, dead letters and the event log — SQLite
//!   embedded, PostgreSQL scaled out.
//! - [`queue`]: the work queue — a SQLite table embedded, NATS JetStream
//!   scaled out — and where the event log is read.
//! - [`config`]: the `[pipeline]`, `[metadata]` and `[queue]` sections.
//! - [`service`]: [`Pipeline`], the handles the API and the workers share,
//!   and the API's operations (upload, list, review decisions, retries).
//! - [`worker`]: pulls jobs, runs the stages, delivers callbacks.

pub mod config;
pub mod event;
pub mod job;
pub mod photo;
pub mod queue;
pub mod rules;
pub mod service;
pub mod store;
pub mod worker;

pub use config::{MetadataConfig, PipelineConfig, QueueConfig};
pub use event::{Event, EventKind, LoggedEvent};
pub use job::{DeadJob, Job, JobKind, RetryPolicy};
pub use photo::{NewPhoto, PhotoRecord, Status, Transition};
pub use queue::{Delivery, EventLog, JobQueue, QueueError, QueueSettings};
pub use rules::{Decision, Reason, Review, ReviewRules, RulesError, Uploader};
pub use service::{original_key, Pipeline, PipelineError, PipelineOptions, ReviewDecision};
pub use store::{MetaStore, StoreError};
pub use worker::{Analyze, StageError, Worker, WorkerObserver};
