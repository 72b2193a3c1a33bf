//! The asynchronous reviewing pipeline: upload → analyze → review → index →
//! published, needs_review or rejected. So far it holds the review rules,
//! which decide a photo's fate from its analysis and its uploader's facts;
//! the stages, workers and durable queue build on them.

pub mod rules;

pub use rules::{Decision, Reason, Review, ReviewRules, RulesError, Uploader};
