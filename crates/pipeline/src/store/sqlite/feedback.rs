//! Feedback in the SQLite store (see [`crate::store::feedback`]).

use domain::feedback::Feedback;
use rusqlite::{params, TransactionBehavior};

use super::rows::*;
use super::SqliteStore;
use crate::event::Event;
use crate::store::feedback::{signal_of, FeedbackCursor};
use crate::store::StoreResult;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS feedback (
    user_id   TEXT NOT NULL,
    photo_seq INTEGER NOT NULL REFERENCES photos (seq) ON DELETE CASCADE,
    photo_id  TEXT NOT NULL,
    signal    TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    PRIMARY KEY (user_id, photo_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feedback_recent ON feedback (user_id, at_ms, photo_seq);
CREATE INDEX IF NOT EXISTS feedback_photo ON feedback (photo_seq);
";

impl SqliteStore {
    pub async fn give_feedback(&self, feedback: &Feedback) -> StoreResult<bool> {
        let feedback = feedback.clone();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let written = tx
                .execute(
                    "INSERT INTO feedback (user_id, photo_seq, photo_id, signal, at_ms) \
                     SELECT ?1, seq, id, ?3, ?4 FROM photos WHERE id = ?2 \
                     ON CONFLICT (user_id, photo_seq) DO UPDATE \
                     SET signal = excluded.signal, at_ms = excluded.at_ms",
                    params![
                        feedback.user,
                        feedback.photo_id,
                        feedback.signal.as_str(),
                        feedback.at_ms
                    ],
                )
                .map_err(db_err)?;
            if written == 0 {
                return Ok(false);
            }
            insert_events(&tx, &[Event::for_feedback(&feedback)])?;
            tx.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    pub async fn feedback_of(
        &self,
        user: &str,
        after: Option<FeedbackCursor>,
        limit: usize,
    ) -> StoreResult<Vec<(i64, Feedback)>> {
        let user = user.to_string();
        let (at, seq) = after.unwrap_or((i64::MAX, i64::MAX));
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT photo_seq, photo_id, signal, at_ms FROM feedback \
                     WHERE user_id = ?1 AND (at_ms, photo_seq) < (?2, ?3) \
                     ORDER BY at_ms DESC, photo_seq DESC LIMIT ?4",
                )
                .map_err(db_err)?
                .query_map(params![user, at, seq, sql_limit(limit)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            rows.into_iter()
                .map(|(seq, photo_id, signal, at_ms)| {
                    Ok((
                        seq,
                        Feedback {
                            signal: signal_of(&user, &photo_id, &signal)?,
                            user: user.clone(),
                            photo_id,
                            at_ms,
                        },
                    ))
                })
                .collect()
        })
        .await
    }
}
