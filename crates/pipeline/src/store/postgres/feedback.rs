//! Feedback in the PostgreSQL store (see [`crate::store::feedback`]).

use domain::feedback::{Feedback, PersonalHead};

use super::rows::*;
use super::{Conn, PgStore};
use crate::analysis::Embedding;
use crate::event::Event;
use crate::store::feedback::{examples, head_from_row, rows_to_feedback, FeedbackCursor, HeadRow};
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
CREATE TABLE IF NOT EXISTS personal_heads (
    user_id    TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    weights    BYTEA NOT NULL,
    bias       DOUBLE PRECISION NOT NULL,
    positives  BIGINT NOT NULL,
    negatives  BIGINT NOT NULL,
    through_ms BIGINT NOT NULL,
    trained_ms BIGINT NOT NULL,
    metrics    TEXT NOT NULL
);
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

    pub async fn feedback_examples(
        &self,
        user: Option<&str>,
        model: &str,
    ) -> StoreResult<Vec<(Feedback, Embedding)>> {
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let rows = client
            .query(
                "SELECT f.user_id, f.photo_id, f.signal, f.at_ms, e.vector FROM feedback f \
                 JOIN photo_embeddings e ON e.photo_seq = f.photo_seq AND e.model = $2 \
                 WHERE $1::TEXT IS NULL OR f.user_id = $1 ORDER BY f.photo_id, f.user_id",
                &[&user, &model],
            )
            .await
            .map_err(pg_error)?;
        let rows = rows.iter().map(five).collect::<StoreResult<Vec<_>>>()?;
        examples(rows)
    }

    pub async fn review_examples(
        &self,
        model: &str,
    ) -> StoreResult<Vec<(String, String, Vec<u8>)>> {
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let rows = client
            .query(
                "SELECT p.id, p.human_review, e.vector FROM photos p \
                 JOIN photo_embeddings e ON e.photo_seq = p.seq AND e.model = $1 \
                 WHERE p.human_review IS NOT NULL ORDER BY p.id",
                &[&model],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(pg_error)?,
                    r.try_get(1).map_err(pg_error)?,
                    r.try_get(2).map_err(pg_error)?,
                ))
            })
            .collect()
    }

    pub async fn save_personal_head(&self, head: &PersonalHead) -> StoreResult<bool> {
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        let written = tx
            .execute(
                "INSERT INTO personal_heads (user_id, model, weights, bias, positives, \
                 negatives, through_ms, trained_ms, metrics) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (user_id) DO UPDATE SET model = EXCLUDED.model, \
                 weights = EXCLUDED.weights, bias = EXCLUDED.bias, \
                 positives = EXCLUDED.positives, negatives = EXCLUDED.negatives, \
                 through_ms = EXCLUDED.through_ms, trained_ms = EXCLUDED.trained_ms, \
                 metrics = EXCLUDED.metrics \
                 WHERE personal_heads.through_ms <= EXCLUDED.through_ms",
                &[
                    &head.user,
                    &head.model,
                    &Embedding(head.weights.clone()).to_le_bytes(),
                    &f64::from(head.bias),
                    &(head.positives as i64),
                    &(head.negatives as i64),
                    &head.through_ms,
                    &head.trained_ms,
                    &to_json(&head.metrics)?,
                ],
            )
            .await
            .map_err(pg_error)?;
        if written == 0 {
            return Ok(false);
        }
        append_in(statements, &tx, &[Event::for_personal_head(head)]).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    pub async fn personal_head(&self, user: &str) -> StoreResult<Option<PersonalHead>> {
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let row = client
            .query_opt(
                "SELECT user_id, model, weights, bias, positives, negatives, through_ms, \
                 trained_ms, metrics FROM personal_heads WHERE user_id = $1",
                &[&user],
            )
            .await
            .map_err(pg_error)?;
        row.map(|r| {
            let row: HeadRow = (
                r.try_get(0).map_err(pg_error)?,
                r.try_get(1).map_err(pg_error)?,
                r.try_get(2).map_err(pg_error)?,
                r.try_get(3).map_err(pg_error)?,
                r.try_get(4).map_err(pg_error)?,
                r.try_get(5).map_err(pg_error)?,
                r.try_get(6).map_err(pg_error)?,
                r.try_get(7).map_err(pg_error)?,
                r.try_get(8).map_err(pg_error)?,
            );
            head_from_row(row)
        })
        .transpose()
    }

    pub async fn personal_head_versions(&self) -> StoreResult<Vec<(String, i64)>> {
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let rows = client
            .query("SELECT user_id, through_ms FROM personal_heads", &[])
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(pg_error)?,
                    r.try_get(1).map_err(pg_error)?,
                ))
            })
            .collect()
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
        let rows = rows.iter().map(five).collect::<StoreResult<Vec<_>>>()?;
        rows_to_feedback(rows)
    }
}

/// A row's first five columns, typed.
fn five<A, B, C, D, E>(r: &tokio_postgres::Row) -> StoreResult<(A, B, C, D, E)>
where
    A: for<'a> tokio_postgres::types::FromSql<'a>,
    B: for<'a> tokio_postgres::types::FromSql<'a>,
    C: for<'a> tokio_postgres::types::FromSql<'a>,
    D: for<'a> tokio_postgres::types::FromSql<'a>,
    E: for<'a> tokio_postgres::types::FromSql<'a>,
{
    Ok((
        r.try_get(0).map_err(pg_error)?,
        r.try_get(1).map_err(pg_error)?,
        r.try_get(2).map_err(pg_error)?,
        r.try_get(3).map_err(pg_error)?,
        r.try_get(4).map_err(pg_error)?,
    ))
}
