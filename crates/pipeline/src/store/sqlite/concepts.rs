//! Trained concepts in the SQLite store (see [`crate::store::concepts`]).

use domain::concept::{Concept, ConceptHead, ConceptVersion, TrainingSpec};

use super::rows::*;
use super::SqliteStore;
use crate::analysis::Embedding;
use crate::event::Event;
use crate::store::concepts::{
    activated, head_from, next_version, review_label, training_event, ConceptScore,
};
use crate::store::{embedding_from, StoreResult};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS concepts (
    name       TEXT PRIMARY KEY,
    active     INTEGER,
    created_ms INTEGER NOT NULL
);
-- `status`, `created_ms` and `activated_at` repeat the body's, for the
-- conditions that keep a stale job from writing over a newer state.
CREATE TABLE IF NOT EXISTS concept_versions (
    name         TEXT NOT NULL REFERENCES concepts (name) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    activated_at INTEGER,
    body         TEXT NOT NULL,
    spec         TEXT NOT NULL,
    weights      BLOB,
    bias         REAL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS concept_scores (
    name      TEXT NOT NULL,
    photo_seq INTEGER NOT NULL REFERENCES photos (seq) ON DELETE CASCADE,
    photo_id  TEXT NOT NULL,
    version   INTEGER NOT NULL,
    score     REAL NOT NULL,
    PRIMARY KEY (name, photo_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS concept_scores_photo ON concept_scores (photo_id);
";

/// The version bodies of one concept, oldest first.
fn bodies(conn: &Connection, name: &str) -> StoreResult<Vec<ConceptVersion>> {
    let mut stmt = conn
        .prepare_cached("SELECT body FROM concept_versions WHERE name = ?1 ORDER BY version")
        .map_err(db_err)?;
    let rows = stmt
        .query_map(params![name], |r| r.get::<_, String>(0))
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    rows.iter()
        .map(|body| from_json(&format!("concept {name}"), body))
        .collect()
}

fn concept(conn: &Connection, name: &str) -> StoreResult<Option<Concept>> {
    let active: Option<Option<i64>> = conn
        .prepare_cached("SELECT active FROM concepts WHERE name = ?1")
        .map_err(db_err)?
        .query_row(params![name], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    let Some(active) = active else {
        return Ok(None);
    };
    Ok(Some(Concept {
        name: name.to_string(),
        active: active.map(|v| v as u32),
        versions: bodies(conn, name)?,
    }))
}

fn embedding_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<(i64, String, Embedding)>> {
    let rows = stmt
        .query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    rows.into_iter()
        .map(|(seq, id, bytes)| {
            let vector = embedding_from(&id, &bytes)?;
            Ok((seq, id, vector))
        })
        .collect()
}

impl SqliteStore {
    pub async fn begin_concept_version(
        &self,
        name: &str,
        spec: &TrainingSpec,
        at_ms: i64,
    ) -> StoreResult<Result<u32, u32>> {
        let (name, spec) = (name.to_string(), spec.clone());
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let version = match next_version(&bodies(&tx, &name)?) {
                Ok(v) => v,
                Err(training) => return Ok(Err(training)),
            };
            tx.execute(
                "INSERT OR IGNORE INTO concepts (name, active, created_ms) VALUES (?1, NULL, ?2)",
                params![name, at_ms],
            )
            .map_err(db_err)?;
            let body = ConceptVersion::queued(version, &spec, at_ms);
            tx.execute(
                "INSERT INTO concept_versions (name, version, status, created_ms, body, spec) \
                 VALUES (?1, ?2, 'training', ?3, ?4, ?5)",
                params![name, version, at_ms, to_json(&body)?, to_json(&spec)?],
            )
            .map_err(db_err)?;
            insert_events(&tx, &[training_event(&name, version, &spec, at_ms)])?;
            tx.commit().map_err(db_err)?;
            Ok(Ok(version))
        })
        .await
    }

    pub async fn update_training(
        &self,
        name: &str,
        version: &ConceptVersion,
        weights: Option<(&[f32], f32)>,
        activate: bool,
        events: &[Event],
    ) -> StoreResult<bool> {
        let (name, body, events) = (name.to_string(), version.clone(), events.to_vec());
        let weights = weights.map(|(w, b)| (Embedding(w.to_vec()).to_le_bytes(), f64::from(b)));
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let (bytes, bias) = weights.unzip();
            let updated = tx
                .execute(
                    "UPDATE concept_versions SET body = ?4, status = ?5, activated_at = ?6, \
                     weights = COALESCE(?7, weights), bias = COALESCE(?8, bias) \
                     WHERE name = ?1 AND version = ?2 AND created_ms = ?3 AND status = 'training'",
                    params![
                        name,
                        body.version,
                        body.created_at,
                        to_json(&body)?,
                        body.status.as_str(),
                        body.activated_at,
                        bytes,
                        bias
                    ],
                )
                .map_err(db_err)?
                > 0;
            if !updated {
                return Ok(false);
            }
            if activate {
                tx.execute(
                    "UPDATE concepts SET active = ?2 WHERE name = ?1",
                    params![name, body.version],
                )
                .map_err(db_err)?;
            }
            insert_events(&tx, &events)?;
            tx.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    pub async fn activate_concept(
        &self,
        name: &str,
        version: u32,
        at_ms: i64,
        events: &[Event],
    ) -> StoreResult<Option<ConceptVersion>> {
        let (name, events) = (name.to_string(), events.to_vec());
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let body: Option<String> = tx
                .prepare_cached(
                    "SELECT body FROM concept_versions \
                     WHERE name = ?1 AND version = ?2 AND status = 'ready'",
                )
                .map_err(db_err)?
                .query_row(params![name, version], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            let Some(body) = body else {
                return Ok(None);
            };
            let mut body: ConceptVersion = from_json(&format!("concept {name}"), &body)?;
            activated(&mut body, at_ms);
            tx.execute(
                "UPDATE concept_versions SET body = ?3, activated_at = ?4 \
                 WHERE name = ?1 AND version = ?2",
                params![name, version, to_json(&body)?, at_ms],
            )
            .map_err(db_err)?;
            tx.execute(
                "UPDATE concepts SET active = ?2 WHERE name = ?1",
                params![name, version],
            )
            .map_err(db_err)?;
            insert_events(&tx, &events)?;
            tx.commit().map_err(db_err)?;
            Ok(Some(body))
        })
        .await
    }

    pub async fn get_concept(&self, name: &str) -> StoreResult<Option<Concept>> {
        let name = name.to_string();
        self.read(move |conn| concept(conn, &name)).await
    }

    pub async fn list_concepts(&self) -> StoreResult<Vec<Concept>> {
        self.read(move |conn| {
            let names = conn
                .prepare_cached("SELECT name FROM concepts ORDER BY name")
                .map_err(db_err)?
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                out.extend(concept(conn, &name)?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn concept_spec(
        &self,
        name: &str,
        version: u32,
    ) -> StoreResult<Option<TrainingSpec>> {
        let name = name.to_string();
        self.read(move |conn| {
            let spec: Option<String> = conn
                .prepare_cached(
                    "SELECT spec FROM concept_versions WHERE name = ?1 AND version = ?2",
                )
                .map_err(db_err)?
                .query_row(params![name, version], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            opt_from_json(&format!("concept {name} v{version}"), spec)
        })
        .await
    }

    pub async fn delete_concept(&self, name: &str, events: &[Event]) -> StoreResult<bool> {
        let (name, events) = (name.to_string(), events.to_vec());
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            tx.execute("DELETE FROM concept_scores WHERE name = ?1", params![name])
                .map_err(db_err)?;
            tx.execute(
                "DELETE FROM concept_versions WHERE name = ?1",
                params![name],
            )
            .map_err(db_err)?;
            let removed = tx
                .execute("DELETE FROM concepts WHERE name = ?1", params![name])
                .map_err(db_err)?
                > 0;
            if removed {
                insert_events(&tx, &events)?;
            }
            tx.commit().map_err(db_err)?;
            Ok(removed)
        })
        .await
    }

    pub async fn active_concepts(&self) -> StoreResult<Vec<(String, u32, i64)>> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT c.name, c.active, COALESCE(v.activated_at, 0) FROM concepts c \
                     JOIN concept_versions v ON v.name = c.name AND v.version = c.active \
                     ORDER BY c.name",
                )
                .map_err(db_err)?
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)? as u32,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            Ok(rows)
        })
        .await
    }

    pub async fn concept_head(&self, name: &str, version: u32) -> StoreResult<Option<ConceptHead>> {
        let name = name.to_string();
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT body, weights, bias FROM concept_versions \
                     WHERE name = ?1 AND version = ?2",
                )
                .map_err(db_err)?
                .query_row(params![name, version], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<Vec<u8>>>(1)?,
                        r.get::<_, Option<f64>>(2)?,
                    ))
                })
                .optional()
                .map_err(db_err)?;
            let Some((body, weights, bias)) = row else {
                return Ok(None);
            };
            let body: ConceptVersion = from_json(&format!("concept {name}"), &body)?;
            head_from(&name, &body, weights.as_deref(), bias)
        })
        .await
    }

    pub async fn embeddings_of(
        &self,
        ids: &[String],
        model: &str,
    ) -> StoreResult<Vec<(String, Embedding)>> {
        let (ids, model) = (ids.to_vec(), model.to_string());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT p.seq, p.id, e.vector FROM photos p JOIN photo_embeddings e \
                     ON e.photo_seq = p.seq AND e.model = ?2 WHERE p.id = ?1",
                )
                .map_err(db_err)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                for (_, id, e) in embedding_rows(&mut stmt, params![id, model])? {
                    out.push((id, e));
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn with_embedding(&self, ids: &[String], model: &str) -> StoreResult<Vec<String>> {
        let (ids, model) = (ids.to_vec(), model.to_string());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT p.id FROM photos p JOIN photo_embeddings e \
                     ON e.photo_seq = p.seq AND e.model = ?2 WHERE p.id = ?1",
                )
                .map_err(db_err)?;
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                found.extend(
                    stmt.query_row(params![id, model], |r| r.get::<_, String>(0))
                        .optional()
                        .map_err(db_err)?,
                );
            }
            Ok(found)
        })
        .await
    }

    pub async fn background_embeddings(
        &self,
        model: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, Embedding)>> {
        let (model, limit) = (model.to_string(), sql_limit(limit));
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT p.seq, p.id, e.vector FROM photos p JOIN photo_embeddings e \
                     ON e.photo_seq = p.seq AND e.model = ?1 ORDER BY p.id LIMIT ?2",
                )
                .map_err(db_err)?;
            Ok(embedding_rows(&mut stmt, params![model, limit])?
                .into_iter()
                .map(|(_, id, e)| (id, e))
                .collect())
        })
        .await
    }

    pub async fn embeddings_page(
        &self,
        model: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String, Embedding)>> {
        let (model, limit) = (model.to_string(), sql_limit(limit));
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT p.seq, p.id, e.vector FROM photo_embeddings e \
                     JOIN photos p ON p.seq = e.photo_seq \
                     WHERE e.model = ?1 AND e.photo_seq > ?2 ORDER BY e.photo_seq LIMIT ?3",
                )
                .map_err(db_err)?;
            embedding_rows(&mut stmt, params![model, after, limit])
        })
        .await
    }

    pub async fn count_embeddings(&self, model: &str) -> StoreResult<u64> {
        let model = model.to_string();
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM photo_embeddings WHERE model = ?1")
                .map_err(db_err)?
                .query_row(params![model], |r| r.get(0))
                .map_err(db_err)?;
            Ok(n as u64)
        })
        .await
    }

    pub async fn save_concept_scores(
        &self,
        name: &str,
        version: &ConceptVersion,
        scores: &[ConceptScore],
        events: &[Event],
    ) -> StoreResult<bool> {
        let (name, body, scores) = (name.to_string(), version.clone(), scores.to_vec());
        let events = events.to_vec();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            // Still the active version, and still the activation this
            // backfill belongs to.
            let current: Option<i64> = tx
                .prepare_cached(
                    "SELECT 1 FROM concepts c JOIN concept_versions v \
                     ON v.name = c.name AND v.version = c.active \
                     WHERE c.name = ?1 AND c.active = ?2 AND v.activated_at IS ?3",
                )
                .map_err(db_err)?
                .query_row(params![name, body.version, body.activated_at], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            if current.is_none() {
                return Ok(false);
            }
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO concept_scores (name, photo_seq, photo_id, version, score) \
                         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name, photo_seq) DO UPDATE \
                         SET version = excluded.version, score = excluded.score",
                    )
                    .map_err(db_err)?;
                for s in &scores {
                    insert
                        .execute(params![
                            name,
                            s.photo_seq,
                            s.photo_id,
                            body.version,
                            s.score
                        ])
                        .map_err(db_err)?;
                }
            }
            tx.execute(
                "UPDATE concept_versions SET body = ?3 WHERE name = ?1 AND version = ?2",
                params![name, body.version, to_json(&body)?],
            )
            .map_err(db_err)?;
            insert_events(&tx, &events)?;
            tx.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    pub async fn concept_scores_page(
        &self,
        name: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String, u32, f32)>> {
        let name = name.to_string();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT photo_seq, photo_id, version, score FROM concept_scores \
                 WHERE name = ?1 AND photo_seq > ?2 ORDER BY photo_seq LIMIT ?3",
            )
            .map_err(db_err)?
            .query_map(params![name, after, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)? as u32,
                    r.get::<_, f64>(3)? as f32,
                ))
            })
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)
        })
        .await
    }

    pub async fn concept_scores_of(&self, photo_id: &str) -> StoreResult<Vec<(String, u32, f32)>> {
        let photo_id = photo_id.to_string();
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT name, version, score FROM concept_scores WHERE photo_id = ?1 \
                     ORDER BY score DESC, name",
                )
                .map_err(db_err)?
                .query_map(params![photo_id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)? as u32,
                        r.get::<_, f64>(2)? as f32,
                    ))
                })
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            Ok(rows)
        })
        .await
    }

    pub async fn concept_score(&self, name: &str, photo_id: &str) -> StoreResult<Option<f32>> {
        let (name, photo_id) = (name.to_string(), photo_id.to_string());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT score FROM concept_scores WHERE name = ?1 AND photo_id = ?2",
            )
            .map_err(db_err)?
            .query_row(params![name, photo_id], |r| r.get::<_, f64>(0))
            .optional()
            .map_err(db_err)
            .map(|s| s.map(|s| s as f32))
        })
        .await
    }

    pub async fn review_labels(&self, keyword: &str) -> StoreResult<Vec<(String, bool)>> {
        let keyword = keyword.to_string();
        let needle = serde_json::to_string(&keyword).unwrap_or_default();
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT id, human_review FROM photos WHERE human_review IS NOT NULL \
                     AND instr(human_review, ?1) > 0 ORDER BY id",
                )
                .map_err(db_err)?
                .query_map(params![needle], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, review)| review_label(&keyword, &review).map(|l| (id, l)))
                .collect())
        })
        .await
    }
}
