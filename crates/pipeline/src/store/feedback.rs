//! People's feedback in the metadata store (`feedback`): one row per user
//! and photo, the last signal winning, written with its `feedback.given`
//! event in one transaction.

use domain::feedback::{Feedback, Signal};

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
