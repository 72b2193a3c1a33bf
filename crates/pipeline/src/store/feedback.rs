//! People's feedback in the metadata store (`feedback`): one row per user
//! and photo, the last signal winning, written with its `feedback.given`
//! event in one transaction; and the personal aesthetic heads trained from
//! it (`personal_heads`, one row per user, weights as float32 bytes).

use domain::feedback::{Feedback, PersonalHead, Signal};

use crate::analysis::Embedding;
use crate::photo::HumanReview;
use crate::rules::Decision;

use super::{dispatch, MetaStore, StoreError, StoreResult};

/// Where a listing of one user's feedback goes on from: the last row's
/// time and photo (rows come newest first).
pub type FeedbackCursor = (i64, i64);

/// A stored signal read back.
pub(crate) fn signal_of(user: &str, photo: &str, text: &str) -> StoreResult<Signal> {
    Signal::parse(text).ok_or_else(|| StoreError::Corrupt {
        id: format!("feedback {user}/{photo}"),
        reason: format!("unknown signal {text:?}"),
    })
}

impl MetaStore {
    /// Records a user's signal on a photo, replacing the one before, with
    /// its event. False, writing nothing, when the photo is not stored.
    pub async fn give_feedback(&self, feedback: &Feedback) -> StoreResult<bool> {
        dispatch!(self, s => s.give_feedback(feedback).await)
    }

    /// One user's feedback, newest first, `limit` rows after `after`:
    /// `(photo seq, feedback)`.
    pub async fn feedback_of(
        &self,
        user: &str,
        after: Option<FeedbackCursor>,
        limit: usize,
    ) -> StoreResult<Vec<(i64, Feedback)>> {
        dispatch!(self, s => s.feedback_of(user, after, limit).await)
    }

    /// Every user's current signal on one photo.
    pub async fn feedback_on(&self, photo_id: &str) -> StoreResult<Vec<Feedback>> {
        dispatch!(self, s => s.feedback_on(photo_id).await)
    }

    /// A user's signals (every user's with `None`) on photos with an
    /// embedding of `model`, with the embedding, by photo id then user (a
    /// stable order for the folds).
    pub async fn feedback_examples(
        &self,
        user: Option<&str>,
        model: &str,
    ) -> StoreResult<Vec<(Feedback, Embedding)>> {
        dispatch!(self, s => s.feedback_examples(user, model).await)
    }

    /// Photos a person published or rejected, with their embedding of
    /// `model`: `(photo id, published, decided at, embedding)`, by photo id.
    pub async fn review_examples(
        &self,
        model: &str,
    ) -> StoreResult<Vec<(String, bool, i64, Embedding)>> {
        let rows = dispatch!(self, s => s.review_examples(model).await)?;
        let mut out = Vec::with_capacity(rows.len());
        for (photo_id, review, bytes) in rows {
            let review: HumanReview =
                serde_json::from_str(&review).map_err(|e| StoreError::Corrupt {
                    id: photo_id.clone(),
                    reason: format!("human review: {e}"),
                })?;
            let published = match review.decision {
                Decision::Publish => true,
                Decision::Reject => false,
                Decision::NeedsReview => continue,
            };
            let vector = super::embedding_from(&photo_id, &bytes)?;
            out.push((photo_id, published, review.at_ms, vector));
        }
        Ok(out)
    }

    /// Stores a user's head with its `aesthetic.trained` event, unless the
    /// stored one was trained through a later signal (false then).
    pub async fn save_personal_head(&self, head: &PersonalHead) -> StoreResult<bool> {
        dispatch!(self, s => s.save_personal_head(head).await)
    }

    /// A user's head, if one was trained.
    pub async fn personal_head(&self, user: &str) -> StoreResult<Option<PersonalHead>> {
        dispatch!(self, s => s.personal_head(user).await)
    }

    /// `(user, through_ms)` of every head: what a process polls to pick up
    /// retrained ones.
    pub async fn personal_head_versions(&self) -> StoreResult<Vec<(String, i64)>> {
        dispatch!(self, s => s.personal_head_versions().await)
    }

    /// All feedback in photo upload order, then by user, `limit` rows
    /// after `(photo seq, user)`: what a search build reads.
    pub async fn feedback_page(
        &self,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> StoreResult<Vec<(i64, Feedback)>> {
        dispatch!(self, s => s.feedback_page(after, limit).await)
    }
}

/// A head's row read back: `(user, model, weights, bias, positives,
/// negatives, through, trained, metrics JSON)`.
pub(crate) type HeadRow = (String, String, Vec<u8>, f64, i64, i64, i64, i64, String);

pub(crate) fn head_from_row(row: HeadRow) -> StoreResult<PersonalHead> {
    let (user, model, weights, bias, positives, negatives, through_ms, trained_ms, metrics) = row;
    let corrupt = |reason: String| StoreError::Corrupt {
        id: format!("personal head {user}"),
        reason,
    };
    let weights = Embedding::from_le_bytes(&weights).map_err(corrupt)?.0;
    let metrics = serde_json::from_str(&metrics).map_err(|e| corrupt(e.to_string()))?;
    Ok(PersonalHead {
        user,
        model,
        weights,
        bias: bias as f32,
        positives: positives as usize,
        negatives: negatives as usize,
        through_ms,
        trained_ms,
        metrics,
    })
}

/// Rows of `(user, photo id, signal, at, embedding bytes)` as examples.
pub(crate) fn examples(
    rows: Vec<(String, String, String, i64, Vec<u8>)>,
) -> StoreResult<Vec<(Feedback, Embedding)>> {
    rows.into_iter()
        .map(|(user, photo_id, signal, at_ms, bytes)| {
            let vector = super::embedding_from(&photo_id, &bytes)?;
            Ok((
                Feedback {
                    signal: signal_of(&user, &photo_id, &signal)?,
                    user,
                    photo_id,
                    at_ms,
                },
                vector,
            ))
        })
        .collect()
}

/// Rows of `(photo seq, user, photo id, signal, at)` as feedback.
pub(crate) fn rows_to_feedback(
    rows: Vec<(i64, String, String, String, i64)>,
) -> StoreResult<Vec<(i64, Feedback)>> {
    rows.into_iter()
        .map(|(seq, user, photo_id, signal, at_ms)| {
            Ok((
                seq,
                Feedback {
                    signal: signal_of(&user, &photo_id, &signal)?,
                    user,
                    photo_id,
                    at_ms,
                },
            ))
        })
        .collect()
}
