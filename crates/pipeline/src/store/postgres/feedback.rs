//! Feedback in the PostgreSQL store (see [`crate::store::feedback`]).

use domain::feedback::Feedback;

use super::rows::*;
use super::{Conn, PgStore};
use crate::event::Event;
use crate::store::feedback::{signal_of, FeedbackCursor};
use crate::store::StoreResult;

pub(super) const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS feedback (
    user_id   TEXT NOT NULL,
    photo_seq BIGINT NOT NULL REFERENCES photos (seq) ON DELETE CASCADE,
    photo_id  TEXT NOT NULL,
    signal    TEXT NOT NULL,
    at_ms     BIGINT NOT NULL,
    PRIMARY KEY (user_id, photo_seq)
);
CREATE INDEX IF NOT EXISTS feedback_recent ON feedback (user_id, at_ms, photo_seq);
CREATE INDEX IF NOT EXISTS feedback_photo ON feedback (photo_seq);
";

impl PgStore {
    pub async fn give_feedback(&self, feedback: &Feedback) -> StoreResult<bool> {
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        let written = tx
            .execute(
                "INSERT INTO feedback (user_id, photo_seq, photo_id, signal, at_ms) \
                 SELECT $1, seq, id, $3, $4 FROM photos WHERE id = $2 \
                 ON CONFLICT (user_id, photo_seq) DO UPDATE \
                 SET signal = EXCLUDED.signal, at_ms = EXCLUDED.at_ms",
                &[
                    &feedback.user,
                    &feedback.photo_id,
                    &feedback.signal.as_str(),
                    &feedback.at_ms,
                ],
            )
            .await
            .map_err(pg_error)?;
        if written == 0 {
            return Ok(false);
        }
        append_in(statements, &tx, &[Event::for_feedback(feedback)]).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    pub async fn feedback_of(
        &self,
        user: &str,
        after: Option<FeedbackCursor>,
        limit: usize,
    ) -> StoreResult<Vec<(i64, Feedback)>> {
        let (at, seq) = after.unwrap_or((i64::MAX, i64::MAX));
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let rows = client
            .query(
                "SELECT photo_seq, photo_id, signal, at_ms FROM feedback \
                 WHERE user_id = $1 AND (at_ms, photo_seq) < ($2, $3) \
                 ORDER BY at_ms DESC, photo_seq DESC LIMIT $4",
                &[&user, &at, &seq, &sql_limit(limit)],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                let photo_id: String = r.try_get(1).map_err(pg_error)?;
                let signal: String = r.try_get(2).map_err(pg_error)?;
                Ok((
                    r.try_get(0).map_err(pg_error)?,
                    Feedback {
                        signal: signal_of(user, &photo_id, &signal)?,
                        user: user.to_string(),
                        photo_id,
                        at_ms: r.try_get(3).map_err(pg_error)?,
                    },
                ))
            })
            .collect()
    }
}
