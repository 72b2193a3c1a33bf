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
}
