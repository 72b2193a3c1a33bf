//! Feedback in the PostgreSQL store (see [`crate::store::feedback`]).

use domain::feedback::Feedback;

use super::rows::*;
use super::{Conn, PgStore};
use crate::event::Event;
use crate::store::feedback::{rows_to_feedback, FeedbackCursor};
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
        self.feedback_rows(
            "SELECT photo_seq, user_id, photo_id, signal, at_ms FROM feedback \
             WHERE user_id = $1 AND (at_ms, photo_seq) < ($2, $3) \
             ORDER BY at_ms DESC, photo_seq DESC LIMIT $4",
            &[&user, &at, &seq, &sql_limit(limit)],
        )
        .await
    }

    pub async fn feedback_on(&self, photo_id: &str) -> StoreResult<Vec<Feedback>> {
        let rows = self
            .feedback_rows(
                "SELECT f.photo_seq, f.user_id, f.photo_id, f.signal, f.at_ms FROM feedback f \
                 JOIN photos p ON p.seq = f.photo_seq WHERE p.id = $1 ORDER BY f.user_id",
                &[&photo_id],
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
             WHERE (photo_seq, user_id) > ($1, $2) ORDER BY photo_seq, user_id LIMIT $3",
            &[&seq, &user, &sql_limit(limit)],
        )
        .await
    }

    /// Runs a feedback query whose columns are `(photo seq, user, photo
    /// id, signal, at)`.
    async fn feedback_rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<(i64, Feedback)>> {
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let rows = client.query(sql, params).await.map_err(pg_error)?;
        let rows = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(pg_error)?,
                    r.try_get(1).map_err(pg_error)?,
                    r.try_get(2).map_err(pg_error)?,
                    r.try_get(3).map_err(pg_error)?,
                    r.try_get(4).map_err(pg_error)?,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        rows_to_feedback(rows)
    }
}
