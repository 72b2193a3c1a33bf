//! Darkroom's domain types, with no runtime and no I/O: what a photo is and
//! goes through, and what is said about it. The pipeline, the engine, the
//! event lake and the reports all speak these types; none of them needs a
//! model runtime or a database to use them.
//!
//! - [`analysis`]: one photo's analysis (the API's JSON shape) and its
//!   embedding.
//! - [`photo`]: statuses, history, submissions, the compare-and-set
//!   [`photo::Transition`].
//! - [`concept`]: concepts trained from example photos, their versions
//!   and what serving one takes.
//! - [`rules`]: the review rules, pure and deterministic.
//! - [`event`]: the typed events every change emits.
//! - [`feedback`]: people's signals on photos (like, dislike, pick, skip).
//! - [`job`]: jobs, the retry policy and dead letters.
//! - [`stage`]: the [`stage::Analyze`] seam between the pipeline and the
//!   model runtime.

pub mod analysis;
pub mod concept;
pub mod event;
pub mod feedback;
pub mod job;
pub mod photo;
pub mod rules;
pub mod stage;

pub use analysis::{Caption, DecodeWarning, Embedding, Face, PhotoAnalysis, StoredEmbedding};
pub use event::{Event, EventKind, LoggedEvent};
pub use job::{DeadJob, Job, JobKind, RetryPolicy};
pub use photo::{NewPhoto, PhotoRecord, Status, Transition};
pub use rules::{Decision, Reason, Review, ReviewRules, RulesError, Thresholds, Uploader};
pub use stage::{Analyze, Analyzed, StageError};
