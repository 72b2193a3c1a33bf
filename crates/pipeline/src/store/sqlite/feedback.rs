//! Feedback in the SQLite store (see [`crate::store::feedback`]).

use domain::feedback::Feedback;
use rusqlite::{params, TransactionBehavior};

use super::rows::*;
use super::SqliteStore;
use crate::event::Event;
use crate::store::feedback::{rows_to_feedback, FeedbackCursor};
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
        self.feedback_rows(
            "SELECT photo_seq, user_id, photo_id, signal, at_ms FROM feedback \
             WHERE user_id = ?1 AND (at_ms, photo_seq) < (?2, ?3) \
             ORDER BY at_ms DESC, photo_seq DESC LIMIT ?4",
            move |stmt| stmt.query(params![user, at, seq, sql_limit(limit)]),
        )
        .await
    }

    pub async fn feedback_on(&self, photo_id: &str) -> StoreResult<Vec<Feedback>> {
        let photo_id = photo_id.to_string();
        let rows = self
            .feedback_rows(
                "SELECT f.photo_seq, f.user_id, f.photo_id, f.signal, f.at_ms FROM feedback f \
                 JOIN photos p ON p.seq = f.photo_seq WHERE p.id = ?1 ORDER BY f.user_id",
                move |stmt| stmt.query(params![photo_id]),
            )
            .await?;
        Ok(rows.into_iter().map(|(_, f)| f).collect())
    }

    pub async fn feedback_page(
        &self,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> StoreResult<Vec<(i64, Feedback)>> {
        let (seq, user) = after.unwrap_or((-1, String::new()));
        self.feedback_rows(
            "SELECT photo_seq, user_id, photo_id, signal, at_ms FROM feedback \
             WHERE (photo_seq, user_id) > (?1, ?2) ORDER BY photo_seq, user_id LIMIT ?3",
            move |stmt| stmt.query(params![seq, user, sql_limit(limit)]),
        )
        .await
    }

    /// Runs a feedback query whose columns are `(photo seq, user, photo
    /// id, signal, at)`.
    async fn feedback_rows(
        &self,
        sql: &'static str,
        query: impl for<'s> FnOnce(
                &'s mut rusqlite::CachedStatement<'_>,
            ) -> rusqlite::Result<rusqlite::Rows<'s>>
            + Send
            + 'static,
    ) -> StoreResult<Vec<(i64, Feedback)>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
            let rows = query(&mut stmt)
                .map_err(db_err)?
                .mapped(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            rows_to_feedback(rows)
        })
        .await
    }
}
