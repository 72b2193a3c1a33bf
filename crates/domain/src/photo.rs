//! A photo's life in the pipeline: its status, the history of how it got
//! there, and the results each stage left.
//!
//! ```text
//! stored ─► analyzed ─► reviewed ─┬─► indexed ─► published
//!                         ▲       ├─► needs_review ──(human decision)──┐
//!                         │       └─► rejected                         │
//!                         └────────────────────────────────────────────┘
//! any stage ─(job dead-lettered)─► failed ─(retried)─► the stage it failed in
//! ```

use crate::analysis::{PhotoAnalysis, StoredEmbedding};
use serde::{Deserialize, Serialize};

use crate::rules::{Decision, Review, Uploader};

/// Where a photo is. `published`, `needs_review`, `rejected` and `failed`
/// are outcomes: automatic processing stops there (a human decision moves a
/// `needs_review` photo on, a retry moves a `failed` one back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Stored,
    Analyzed,
    Reviewed,
    Indexed,
    Published,
    NeedsReview,
    Rejected,
    Failed,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Stored,
        Status::Analyzed,
        Status::Reviewed,
        Status::Indexed,
        Status::Published,
        Status::NeedsReview,
        Status::Rejected,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Stored => "stored",
            Status::Analyzed => "analyzed",
            Status::Reviewed => "reviewed",
            Status::Indexed => "indexed",
            Status::Published => "published",
            Status::NeedsReview => "needs_review",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Automatic processing ends here; the callback fires.
    pub fn is_outcome(self) -> bool {
        matches!(
            self,
            Status::Published | Status::NeedsReview | Status::Rejected | Status::Failed
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a photo's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageEntry {
    pub status: Status,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Who moved it: `api`, `worker:<host>:<pid>`, or `reviewer:<name>`.
    pub by: String,
}

/// What the uploader sent with the photo. The first upload's submission
/// stays; a second upload of the same bytes changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Submission {
    pub uploader: Uploader,
    /// POSTed the photo's record whenever it reaches an outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// The original's facts, from its header at upload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Original {
    pub bytes: u64,
    pub format: String,
    pub width: u32,
    pub height: u32,
}

/// A reviewer's decision on a `needs_review` photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HumanReview {
    /// `publish` or `reject` (`needs_review` is not a decision).
    pub decision: Decision,
    /// Keywords the reviewer kept (from the suggestions or their own).
    pub accepted: Vec<String>,
    /// Keywords the reviewer struck (from the accepted or suggested ones).
    pub rejected: Vec<String>,
    pub reviewer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub at_ms: i64,
}

/// Everything the pipeline knows about one photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhotoRecord {
    /// sha256 of the original's bytes, lowercase hex.
    pub id: String,
    /// Upload order; the list cursor.
    pub seq: i64,
    pub status: Status,
    /// Oldest first; the last entry's status is `status`.
    pub history: Vec<StageEntry>,
    pub submission: Submission,
    pub original: Original,
    pub analysis: Option<PhotoAnalysis>,
    /// The review rules' verdict.
    pub review: Option<Review>,
    pub human_review: Option<HumanReview>,
    /// The keywords indexed for search (set by the `indexed` stage).
    pub keywords: Vec<String>,
    /// Why the photo is `failed`.
    pub error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl PhotoRecord {
    /// When the photo entered its current status.
    pub fn status_since_ms(&self) -> i64 {
        self.history.last().map_or(self.created_ms, |e| e.at_ms)
    }

    /// Applies `t` as the store does (status, history, the fields it
    /// sets), without checking `t.from`: the caller has.
    pub fn apply(&mut self, t: &Transition) {
        self.status = t.to;
        self.history.push(StageEntry {
            status: t.to,
            at_ms: t.at_ms,
            by: t.by.clone(),
        });
        if let Some(analysis) = &t.analysis {
            self.analysis = Some(analysis.clone());
        }
        if let Some(review) = &t.review {
            self.review = Some(review.clone());
        }
        if let Some(human) = &t.human_review {
            self.human_review = Some(human.clone());
        }
        if let Some(keywords) = &t.keywords {
            self.keywords = keywords.clone();
        }
        if let Some(error) = &t.error {
            self.error = error.clone();
        }
        self.updated_ms = t.at_ms;
    }

    /// Applies a chain of transitions, each from where the one before left
    /// the photo. `false` (and the record as it was before the first that
    /// did not follow) if one does not start at the photo's status.
    pub fn apply_chain(&mut self, chain: &[Transition]) -> bool {
        for t in chain {
            if t.from != self.status {
                return false;
            }
            self.apply(t);
        }
        true
    }

    /// The status before the last failure: where a retry resumes.
    pub fn resume_status(&self) -> Status {
        self.history
            .iter()
            .rev()
            .map(|e| e.status)
            .find(|s| *s != Status::Failed)
            .unwrap_or(Status::Stored)
    }
}

/// A photo to insert at upload.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPhoto {
    pub id: String,
    pub submission: Submission,
    pub original: Original,
    pub by: String,
    pub at_ms: i64,
}

/// One status change, applied only if the photo is still in `from` (a
/// compare-and-set): a stage that runs twice for a photo leaves one result.
/// The `Some` fields replace the record's; `events` are appended to the
/// event log in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub photo_id: String,
    pub from: Status,
    pub to: Status,
    pub by: String,
    pub at_ms: i64,
    pub analysis: Option<PhotoAnalysis>,
    /// Kept beside the analysis (replacing this model's earlier one).
    pub embedding: Option<StoredEmbedding>,
    pub review: Option<Review>,
    pub human_review: Option<HumanReview>,
    /// Replaces the photo's indexed keywords (the search index rows too).
    pub keywords: Option<Vec<String>>,
    /// Sets (or, with `Some(None)`, clears) the failure reason.
    pub error: Option<Option<String>>,
    pub events: Vec<crate::event::Event>,
}

impl Transition {
    /// A bare status change; fill in the fields the stage produced.
    pub fn new(photo_id: &str, from: Status, to: Status, by: &str, at_ms: i64) -> Transition {
        Transition {
            photo_id: photo_id.to_string(),
            from,
            to,
            by: by.to_string(),
            at_ms,
            analysis: None,
            embedding: None,
            review: None,
            human_review: None,
            keywords: None,
            error: None,
            events: Vec::new(),
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
