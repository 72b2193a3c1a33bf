//! Trained concepts in the PostgreSQL store (see [`crate::store::concepts`]).
//! Starting a version takes an advisory lock on the concept's name, so two
//! API replicas asked at once start one training, not two.

use domain::concept::{Concept, ConceptHead, ConceptVersion, TrainingSpec};

use super::rows::*;
use super::{statement, Conn, PgStore};
use crate::analysis::Embedding;
use crate::event::Event;
use crate::store::concepts::{
    activated, head_from, next_version, review_label, training_event, ConceptScore,
};
use crate::store::{embedding_from, StoreResult};
use tokio_postgres::{GenericClient, Row};

pub(super) const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS concepts (
    name       TEXT PRIMARY KEY,
    active     INTEGER,
    created_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS concept_versions (
    name         TEXT NOT NULL REFERENCES concepts (name) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    activated_at BIGINT,
    body         TEXT NOT NULL,
    spec         TEXT NOT NULL,
    weights      BYTEA,
    bias         DOUBLE PRECISION,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS concept_scores (
    name      TEXT NOT NULL,
    photo_seq BIGINT NOT NULL REFERENCES photos (seq) ON DELETE CASCADE,
    photo_id  TEXT NOT NULL,
    version   INTEGER NOT NULL,
    score     REAL NOT NULL,
    PRIMARY KEY (name, photo_seq)
);
CREATE INDEX IF NOT EXISTS concept_scores_photo ON concept_scores (photo_id);
";

const BODIES: &str = "SELECT body FROM concept_versions WHERE name = $1 ORDER BY version";
const ACTIVE: &str = "SELECT active FROM concepts WHERE name = $1";

fn pg_version(version: u32) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}

async fn bodies<C: GenericClient + Sync>(
    client: &C,
    statements: &mut std::collections::HashMap<&'static str, tokio_postgres::Statement>,
    name: &str,
) -> StoreResult<Vec<ConceptVersion>> {
    let s = statement(statements, client, BODIES).await?;
    let rows = client.query(&s, &[&name]).await.map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            let body: String = r.try_get(0).map_err(pg_error)?;
            from_json(&body, &format!("concept {name}"))
        })
        .collect()
}

/// The concept's `active` column: `None` when the concept is missing.
async fn active<C: GenericClient + Sync>(
    client: &C,
    statements: &mut std::collections::HashMap<&'static str, tokio_postgres::Statement>,
    name: &str,
) -> StoreResult<Option<Option<i32>>> {
    let s = statement(statements, client, ACTIVE).await?;
    let row = client.query_opt(&s, &[&name]).await.map_err(pg_error)?;
    row.map(|r| r.try_get(0).map_err(pg_error)).transpose()
}

fn embedding_rows(rows: &[Row]) -> StoreResult<Vec<(i64, String, Embedding)>> {
    rows.iter()
        .map(|r| {
            let seq: i64 = r.try_get(0).map_err(pg_error)?;
            let id: String = r.try_get(1).map_err(pg_error)?;
            let bytes: Vec<u8> = r.try_get(2).map_err(pg_error)?;
            let vector = embedding_from(&id, &bytes)?;
            Ok((seq, id, vector))
        })
        .collect()
}

impl PgStore {
    pub async fn begin_concept_version(
        &self,
        name: &str,
        spec: &TrainingSpec,
        at_ms: i64,
    ) -> StoreResult<Result<u32, u32>> {
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("darkroom.concept:{name}")],
        )
        .await
        .map_err(pg_error)?;
        let version = match next_version(&bodies(&tx, statements, name).await?) {
            Ok(v) => v,
            Err(training) => return Ok(Err(training)),
        };
        tx.execute(
            "INSERT INTO concepts (name, active, created_ms) VALUES ($1, NULL, $2) \
             ON CONFLICT (name) DO NOTHING",
            &[&name, &at_ms],
        )
        .await
        .map_err(pg_error)?;
        let body = ConceptVersion::queued(version, spec, at_ms);
        tx.execute(
            "INSERT INTO concept_versions (name, version, status, created_ms, body, spec) \
             VALUES ($1, $2, 'training', $3, $4, $5)",
            &[
                &name,
                &pg_version(version),
                &at_ms,
                &to_json(&body)?,
                &to_json(spec)?,
            ],
        )
        .await
        .map_err(pg_error)?;
        append_in(
            statements,
            &tx,
            &[training_event(name, version, spec, at_ms)],
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Ok(version))
    }

    pub async fn update_training(
        &self,
        name: &str,
        version: &ConceptVersion,
        weights: Option<(&[f32], f32)>,
        activate: bool,
        events: &[Event],
    ) -> StoreResult<bool> {
        let (bytes, bias) = weights
            .map(|(w, b)| (Embedding(w.to_vec()).to_le_bytes(), f64::from(b)))
            .unzip();
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        let updated = tx
            .execute(
                "UPDATE concept_versions SET body = $4, status = $5, activated_at = $6, \
                 weights = COALESCE($7, weights), bias = COALESCE($8, bias) \
                 WHERE name = $1 AND version = $2 AND created_ms = $3 AND status = 'training'",
                &[
                    &name,
                    &pg_version(version.version),
                    &version.created_at,
                    &to_json(version)?,
                    &version.status.as_str(),
                    &version.activated_at,
                    &bytes,
                    &bias,
                ],
            )
            .await
            .map_err(pg_error)?
            > 0;
        if !updated {
            return Ok(false);
        }
        if activate {
            tx.execute(
                "UPDATE concepts SET active = $2 WHERE name = $1",
                &[&name, &pg_version(version.version)],
            )
            .await
            .map_err(pg_error)?;
        }
        append_in(statements, &tx, events).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    pub async fn activate_concept(
        &self,
        name: &str,
        version: u32,
        at_ms: i64,
        events: &[Event],
    ) -> StoreResult<Option<ConceptVersion>> {
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        // The concept's row first: a running backfill page or a delete
        // waits, or is waited for, as a whole.
        let exists = tx
            .query_opt(
                "SELECT 1 FROM concepts WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await
            .map_err(pg_error)?;
        let row = match exists {
            Some(_) => tx
                .query_opt(
                    "SELECT body FROM concept_versions \
                     WHERE name = $1 AND version = $2 AND status = 'ready'",
                    &[&name, &pg_version(version)],
                )
                .await
                .map_err(pg_error)?,
            None => None,
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let body: String = row.try_get(0).map_err(pg_error)?;
        let mut body: ConceptVersion = from_json(&body, &format!("concept {name}"))?;
        activated(&mut body, at_ms);
        tx.execute(
            "UPDATE concept_versions SET body = $3, activated_at = $4 \
             WHERE name = $1 AND version = $2",
            &[&name, &pg_version(version), &to_json(&body)?, &at_ms],
        )
        .await
        .map_err(pg_error)?;
        tx.execute(
            "UPDATE concepts SET active = $2 WHERE name = $1",
            &[&name, &pg_version(version)],
        )
        .await
        .map_err(pg_error)?;
        append_in(statements, &tx, events).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Some(body))
    }

    pub async fn get_concept(&self, name: &str) -> StoreResult<Option<Concept>> {
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let Some(active) = active(client, statements, name).await? else {
            return Ok(None);
        };
        Ok(Some(Concept {
            name: name.to_string(),
            active: active.map(|v| v as u32),
            versions: bodies(client, statements, name).await?,
        }))
    }

    pub async fn list_concepts(&self) -> StoreResult<Vec<Concept>> {
        let names: Vec<String> = {
            let mut lease = self.acquire().await?;
            let Conn { client, .. } = lease.conn();
            client
                .query("SELECT name FROM concepts ORDER BY name", &[])
                .await
                .map_err(pg_error)?
                .iter()
                .map(|r| r.try_get(0).map_err(pg_error))
                .collect::<StoreResult<_>>()?
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.extend(self.get_concept(&name).await?);
        }
        Ok(out)
    }

    pub async fn concept_spec(
        &self,
        name: &str,
        version: u32,
    ) -> StoreResult<Option<TrainingSpec>> {
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let row = client
            .query_opt(
                "SELECT spec FROM concept_versions WHERE name = $1 AND version = $2",
                &[&name, &pg_version(version)],
            )
            .await
            .map_err(pg_error)?;
        row.map(|r| {
            let spec: String = r.try_get(0).map_err(pg_error)?;
            from_json(&spec, &format!("concept {name} v{version}"))
        })
        .transpose()
    }

    pub async fn delete_concept(&self, name: &str, events: &[Event]) -> StoreResult<bool> {
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        // The concept's row first, as a backfill page locks it: a page in
        // flight commits before the scores are deleted, or finds no concept.
        tx.execute(
            "SELECT 1 FROM concepts WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await
        .map_err(pg_error)?;
        tx.execute("DELETE FROM concept_scores WHERE name = $1", &[&name])
            .await
            .map_err(pg_error)?;
        tx.execute("DELETE FROM concept_versions WHERE name = $1", &[&name])
            .await
            .map_err(pg_error)?;
        let removed = tx
            .execute("DELETE FROM concepts WHERE name = $1", &[&name])
            .await
            .map_err(pg_error)?
            > 0;
        if removed {
            append_in(statements, &tx, events).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(removed)
    }

    pub async fn active_concepts(&self) -> StoreResult<Vec<(String, u32, i64)>> {
        const SQL: &str = "SELECT c.name, c.active, COALESCE(v.activated_at, 0) FROM concepts c \
             JOIN concept_versions v ON v.name = c.name AND v.version = c.active ORDER BY c.name";
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        client
            .query(&s, &[])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| {
                let v: i32 = r.try_get(1).map_err(pg_error)?;
                Ok((
                    r.try_get(0).map_err(pg_error)?,
                    v as u32,
                    r.try_get(2).map_err(pg_error)?,
                ))
            })
            .collect()
    }

    pub async fn concept_head(&self, name: &str, version: u32) -> StoreResult<Option<ConceptHead>> {
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let row = client
            .query_opt(
                "SELECT body, weights, bias FROM concept_versions WHERE name = $1 AND version = $2",
                &[&name, &pg_version(version)],
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let body: String = row.try_get(0).map_err(pg_error)?;
        let weights: Option<Vec<u8>> = row.try_get(1).map_err(pg_error)?;
        let bias: Option<f64> = row.try_get(2).map_err(pg_error)?;
        let body: ConceptVersion = from_json(&body, &format!("concept {name}"))?;
        head_from(name, &body, weights.as_deref(), bias)
    }

    pub async fn embeddings_of(
        &self,
        ids: &[String],
        model: &str,
    ) -> StoreResult<Vec<(String, Embedding)>> {
        const SQL: &str = "SELECT p.seq, p.id, e.vector FROM photos p JOIN photo_embeddings e \
             ON e.photo_seq = p.seq AND e.model = $2 WHERE p.id = ANY($1)";
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let rows = client.query(&s, &[&ids, &model]).await.map_err(pg_error)?;
        Ok(embedding_rows(&rows)?
            .into_iter()
            .map(|(_, id, e)| (id, e))
            .collect())
    }

    pub async fn with_embedding(&self, ids: &[String], model: &str) -> StoreResult<Vec<String>> {
        const SQL: &str = "SELECT p.id FROM photos p JOIN photo_embeddings e \
             ON e.photo_seq = p.seq AND e.model = $2 WHERE p.id = ANY($1)";
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        client
            .query(&s, &[&ids, &model])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| r.try_get(0).map_err(pg_error))
            .collect()
    }

    pub async fn background_embeddings(
        &self,
        model: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, Embedding)>> {
        const SQL: &str = "SELECT p.seq, p.id, e.vector FROM photos p JOIN photo_embeddings e \
             ON e.photo_seq = p.seq AND e.model = $1 ORDER BY p.id LIMIT $2";
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let rows = client
            .query(&s, &[&model, &sql_limit(limit)])
            .await
            .map_err(pg_error)?;
        Ok(embedding_rows(&rows)?
            .into_iter()
            .map(|(_, id, e)| (id, e))
            .collect())
    }

    pub async fn embeddings_page(
        &self,
        model: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String, Embedding)>> {
        const SQL: &str = "SELECT p.seq, p.id, e.vector FROM photo_embeddings e \
             JOIN photos p ON p.seq = e.photo_seq \
             WHERE e.model = $1 AND e.photo_seq > $2 ORDER BY e.photo_seq LIMIT $3";
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let rows = client
            .query(&s, &[&model, &after, &sql_limit(limit)])
            .await
            .map_err(pg_error)?;
        embedding_rows(&rows)
    }

    pub async fn count_embeddings(&self, model: &str) -> StoreResult<u64> {
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let row = client
            .query_one(
                "SELECT count(*) FROM photo_embeddings WHERE model = $1",
                &[&model],
            )
            .await
            .map_err(pg_error)?;
        let n: i64 = row.try_get(0).map_err(pg_error)?;
        Ok(n.max(0) as u64)
    }

    pub async fn save_concept_scores(
        &self,
        name: &str,
        version: &ConceptVersion,
        scores: &[ConceptScore],
        events: &[Event],
    ) -> StoreResult<bool> {
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        // Locks the concept's row: an activation or a delete waits for
        // this page. Still the active version, and still the activation
        // this backfill belongs to?
        let current = tx
            .query_opt(
                "SELECT 1 FROM concepts c JOIN concept_versions v \
                 ON v.name = c.name AND v.version = c.active \
                 WHERE c.name = $1 AND c.active = $2 AND v.activated_at IS NOT DISTINCT FROM $3 \
                 FOR UPDATE OF c",
                &[&name, &pg_version(version.version), &version.activated_at],
            )
            .await
            .map_err(pg_error)?;
        if current.is_none() {
            return Ok(false);
        }
        // One statement per page: arrays of the columns, unnested.
        let seqs: Vec<i64> = scores.iter().map(|s| s.photo_seq).collect();
        let ids: Vec<&str> = scores.iter().map(|s| s.photo_id.as_str()).collect();
        let values: Vec<f32> = scores.iter().map(|s| s.score).collect();
        tx.execute(
            "INSERT INTO concept_scores (name, photo_seq, photo_id, version, score) \
             SELECT $1, s, i, $2, v FROM unnest($3::BIGINT[], $4::TEXT[], $5::REAL[]) AS t (s, i, v) \
             ON CONFLICT (name, photo_seq) DO UPDATE SET version = EXCLUDED.version, \
             score = EXCLUDED.score",
            &[&name, &pg_version(version.version), &seqs, &ids, &values],
        )
        .await
        .map_err(pg_error)?;
        tx.execute(
            "UPDATE concept_versions SET body = $3 WHERE name = $1 AND version = $2",
            &[&name, &pg_version(version.version), &to_json(version)?],
        )
        .await
        .map_err(pg_error)?;
        append_in(statements, &tx, events).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    pub async fn concept_scores_page(
        &self,
        name: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String, u32, f32)>> {
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let rows = client
            .query(
                "SELECT photo_seq, photo_id, version, score FROM concept_scores \
                 WHERE name = $1 AND photo_seq > $2 ORDER BY photo_seq LIMIT $3",
                &[&name, &after, &(limit as i64)],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<_, i64>(0).map_err(pg_error)?,
                    r.try_get::<_, String>(1).map_err(pg_error)?,
                    r.try_get::<_, i32>(2).map_err(pg_error)? as u32,
                    r.try_get::<_, f32>(3).map_err(pg_error)?,
                ))
            })
            .collect()
    }

    pub async fn concept_scores_of(&self, photo_id: &str) -> StoreResult<Vec<(String, u32, f32)>> {
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let rows = client
            .query(
                "SELECT name, version, score FROM concept_scores WHERE photo_id = $1 \
                 ORDER BY score DESC, name",
                &[&photo_id],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                let version: i32 = r.try_get(1).map_err(pg_error)?;
                Ok((
                    r.try_get(0).map_err(pg_error)?,
                    version as u32,
                    r.try_get(2).map_err(pg_error)?,
                ))
            })
            .collect()
    }

    pub async fn concept_score(&self, name: &str, photo_id: &str) -> StoreResult<Option<f32>> {
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let row = client
            .query_opt(
                "SELECT score FROM concept_scores WHERE name = $1 AND photo_id = $2",
                &[&name, &photo_id],
            )
            .await
            .map_err(pg_error)?;
        row.map(|r| r.try_get::<_, f32>(0).map_err(pg_error))
            .transpose()
    }

    pub async fn review_labels(&self, keyword: &str) -> StoreResult<Vec<(String, bool)>> {
        let needle = serde_json::to_string(keyword).unwrap_or_default();
        let mut lease = self.acquire().await?;
        let Conn { client, .. } = lease.conn();
        let rows = client
            .query(
                "SELECT id, human_review FROM photos WHERE human_review IS NOT NULL \
                 AND strpos(human_review, $1) > 0 ORDER BY id",
                &[&needle],
            )
            .await
            .map_err(pg_error)?;
        let mut out = Vec::new();
        for r in &rows {
            let id: String = r.try_get(0).map_err(pg_error)?;
            let review: String = r.try_get(1).map_err(pg_error)?;
            if let Some(label) = review_label(keyword, &review) {
                out.push((id, label));
            }
        }
        Ok(out)
    }
}
