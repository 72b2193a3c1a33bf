//! Feedback in the SQLite store (see [`crate::store::feedback`]).

use domain::feedback::{Feedback, PersonalHead};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::rows::*;
use super::SqliteStore;
use crate::analysis::Embedding;
use crate::event::Event;
use crate::store::feedback::{examples, head_from_row, rows_to_feedback, FeedbackCursor, HeadRow};
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
CREATE TABLE IF NOT EXISTS personal_heads (
    user_id    TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    weights    BLOB NOT NULL,
    bias       REAL NOT NULL,
    positives  INTEGER NOT NULL,
    negatives  INTEGER NOT NULL,
    through_ms INTEGER NOT NULL,
    trained_ms INTEGER NOT NULL,
    metrics    TEXT NOT NULL
);
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

    pub async fn feedback_examples(
        &self,
        user: Option<&str>,
        model: &str,
    ) -> StoreResult<Vec<(Feedback, Embedding)>> {
        let (user, model) = (user.map(str::to_string), model.to_string());
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT f.user_id, f.photo_id, f.signal, f.at_ms, e.vector FROM feedback f \
                     JOIN photo_embeddings e ON e.photo_seq = f.photo_seq AND e.model = ?2 \
                     WHERE ?1 IS NULL OR f.user_id = ?1 ORDER BY f.photo_id, f.user_id",
                )
                .map_err(db_err)?
                .query_map(params![user, model], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                    ))
                })
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            examples(rows)
        })
        .await
    }

    pub async fn review_examples(
        &self,
        model: &str,
    ) -> StoreResult<Vec<(String, String, Vec<u8>)>> {
        let model = model.to_string();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT p.id, p.human_review, e.vector FROM photos p \
                 JOIN photo_embeddings e ON e.photo_seq = p.seq AND e.model = ?1 \
                 WHERE p.human_review IS NOT NULL ORDER BY p.id",
            )
            .map_err(db_err)?
            .query_map(params![model], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)
        })
        .await
    }

    pub async fn save_personal_head(&self, head: &PersonalHead) -> StoreResult<bool> {
        let head = head.clone();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let written = tx
                .execute(
                    "INSERT INTO personal_heads (user_id, model, weights, bias, positives, \
                     negatives, through_ms, trained_ms, metrics) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (user_id) DO UPDATE SET model = excluded.model, \
                     weights = excluded.weights, bias = excluded.bias, \
                     positives = excluded.positives, negatives = excluded.negatives, \
                     through_ms = excluded.through_ms, trained_ms = excluded.trained_ms, \
                     metrics = excluded.metrics \
                     WHERE personal_heads.through_ms <= excluded.through_ms",
                    params![
                        head.user,
                        head.model,
                        Embedding(head.weights.clone()).to_le_bytes(),
                        f64::from(head.bias),
                        head.positives as i64,
                        head.negatives as i64,
                        head.through_ms,
                        head.trained_ms,
                        to_json(&head.metrics)?
                    ],
                )
                .map_err(db_err)?;
            if written == 0 {
                return Ok(false);
            }
            insert_events(&tx, &[Event::for_personal_head(&head)])?;
            tx.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    pub async fn personal_head(&self, user: &str) -> StoreResult<Option<PersonalHead>> {
        let user = user.to_string();
        self.read(move |conn| {
            let row: Option<HeadRow> = conn
                .prepare_cached(
                    "SELECT user_id, model, weights, bias, positives, negatives, through_ms, \
                     trained_ms, metrics FROM personal_heads WHERE user_id = ?1",
                )
                .map_err(db_err)?
                .query_row(params![user], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                })
                .optional()
                .map_err(db_err)?;
            row.map(head_from_row).transpose()
        })
        .await
    }

    pub async fn personal_head_versions(&self) -> StoreResult<Vec<(String, i64)>> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT user_id, through_ms FROM personal_heads")
                .map_err(db_err)?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)
        })
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
