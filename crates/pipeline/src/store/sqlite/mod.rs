//! The embedded metadata store: one SQLite file in WAL mode.
//!
//! Several processes open the same file (the API and its workers), so
//! nothing here relies on being the only writer: every read-modify-write is
//! one `BEGIN IMMEDIATE` transaction (the write lock is taken before the
//! read, so two processes cannot both read `stored` and both move the photo
//! on), and a lock held past `busy_timeout` is [`StoreError::Unavailable`],
//! which the worker retries.
//!
//! `synchronous = NORMAL` in WAL mode can lose the last transactions on a
//! power cut but not on a process crash (the WAL is in the OS's page cache),
//! and a process crash — a worker killed mid-job — is what the pipeline has
//! to survive. Nothing committed is lost when a worker is killed with -9.
//!
//! A `rusqlite::Connection` is `Send` but not `Sync`, and every call blocks,
//! so each handle is a mutex around a connection and every call runs on
//! tokio's blocking pool. There are two connections: a writer and a
//! `query_only` reader, so a page of the photo list is not held up behind a
//! write transaction that is waiting for another process's lock (WAL lets
//! readers run beside a writer).
//!
//! Records are stored as columns of JSON (history, submission, original,
//! analysis, ...): the record types evolve with serde defaults, and nothing
//! queries inside them. What is queried has its own column or table: the
//! status and upload order (`photos(status, seq)`), and the search keywords
//! (`photo_keywords`). Embeddings are float32 bytes in a table of their
//! own (`photo_embeddings`), so listing photos never reads them.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::stored_embedding;
use super::{StoreError, StoreResult};
use crate::analysis::StoredEmbedding;
use crate::event::{Event, LoggedEvent};
use crate::job::{DeadJob, Job};
use crate::photo::{NewPhoto, PhotoRecord, StageEntry, Status, Transition};

/// How long a statement waits for another connection's lock before it
/// fails with "busy" (then [`StoreError::Unavailable`]). Long enough to ride
/// out another process's transaction, short enough that a stuck one shows.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The tables of the metadata store. The `jobs` table of the embedded queue
/// is made by [`crate::queue::sqlite`], which owns it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS photos (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    history      TEXT NOT NULL,
    submission   TEXT NOT NULL,
    original     TEXT NOT NULL,
    analysis     TEXT,
    review       TEXT,
    human_review TEXT,
    keywords     TEXT NOT NULL,
    error        TEXT,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS photos_status_seq ON photos (status, seq);

CREATE TABLE IF NOT EXISTS photo_keywords (
    keyword   TEXT NOT NULL,
    photo_seq INTEGER NOT NULL REFERENCES photos (seq) ON DELETE CASCADE,
    photo_id  TEXT NOT NULL,
    PRIMARY KEY (keyword, photo_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS photo_keywords_photo ON photo_keywords (photo_seq);

-- One embedding per photo and model, float32 little-endian; written with
-- the analysis (same transaction) or by `darkroom embeddings backfill`.
CREATE TABLE IF NOT EXISTS photo_embeddings (
    photo_seq  INTEGER NOT NULL REFERENCES photos (seq) ON DELETE CASCADE,
    model      TEXT NOT NULL,
    version    TEXT NOT NULL,
    dims       INTEGER NOT NULL,
    vector     BLOB NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (photo_seq, model)
);

CREATE TABLE IF NOT EXISTS dead_jobs (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   TEXT NOT NULL UNIQUE,
    job      TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    error    TEXT NOT NULL,
    at_ms    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL UNIQUE,
    type     TEXT NOT NULL,
    photo_id TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    body     TEXT NOT NULL
);
";

/// An analysed photo without an embedding of model ?1 at version ?2.
const MISSING: &str = "p.analysis IS NOT NULL AND NOT EXISTS (SELECT 1 FROM photo_embeddings e \
                       WHERE e.photo_seq = p.seq AND e.model = ?1 AND e.version = ?2)";

const PHOTO_COLUMNS: &str = "seq, id, status, history, submission, original, analysis, review, \
                             human_review, keywords, error, created_ms, updated_ms";

/// Photo records, dead letters and the event log in one SQLite file. Cheap
/// to clone: the clones share the connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) the database file,
    /// switches it to WAL and creates the tables.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        SqliteStore::open_with(path, BUSY_TIMEOUT).await
    }

    /// [`SqliteStore::open`] with another busy timeout (tests make it short).
    pub(crate) async fn open_with(path: &Path, busy: Duration) -> StoreResult<SqliteStore> {
        let path = path.to_path_buf();
        blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("creating {}: {e}", dir.display()))
                })?;
            }
            let open = |query_only: bool| -> StoreResult<Connection> {
                let conn = Connection::open(&path).map_err(|e| {
                    StoreError::Unavailable(format!("opening {}: {e}", path.display()))
                })?;
                configure(&conn, busy, query_only).map_err(db_err)?;
                Ok(conn)
            };
            let mut writer = open(false)?;
            // The schema first, on the writer. Several processes may start at
            // once: IF NOT EXISTS in one immediate transaction makes it a
            // no-op for all but the first.
            let tx = writer
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            tx.execute_batch(SCHEMA).map_err(db_err)?;
            tx.execute_batch(concepts::SCHEMA).map_err(db_err)?;
            tx.execute_batch(feedback::SCHEMA).map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            let reader = open(true)?;
            Ok(SqliteStore {
                inner: Arc::new(Inner {
                    writer: Mutex::new(writer),
                    reader: Mutex::new(reader),
                }),
            })
        })
        .await
    }

    /// Runs `f` with the writer connection on the blocking pool. The queue
    /// in the same file goes through here too, so one process has one
    /// writer and SQLite's lock is only contended between processes.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(move || f(&mut lock(&inner.writer))).await
    }

    /// Runs `f` with the (query-only) reader connection on the blocking pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(move || f(&lock(&inner.reader))).await
    }

    pub async fn insert_photo(
        &self,
        photo: &NewPhoto,
        events: &[Event],
    ) -> StoreResult<(PhotoRecord, bool)> {
        let photo = photo.clone();
        let events = events.to_vec();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let history = vec![StageEntry {
                status: Status::Stored,
                at_ms: photo.at_ms,
                by: photo.by.clone(),
            }];
            let created = tx
                .execute(
                    "INSERT OR IGNORE INTO photos (id, status, history, submission, original, \
                     analysis, review, human_review, keywords, error, created_ms, updated_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, NULL, '[]', NULL, ?6, ?6)",
                    params![
                        photo.id,
                        Status::Stored.as_str(),
                        to_json(&history)?,
                        to_json(&photo.submission)?,
                        to_json(&photo.original)?,
                        photo.at_ms,
                    ],
                )
                .map_err(db_err)?
                == 1;
            if created {
                insert_events(&tx, &events)?;
            }
            let record = select_photo(&tx, &photo.id)?.ok_or_else(|| {
                StoreError::Backend(format!("photo {} vanished after its insert", photo.id))
            })?;
            tx.commit().map_err(db_err)?;
            Ok((record, created))
        })
        .await
    }

    pub async fn get(&self, id: &str) -> StoreResult<Option<PhotoRecord>> {
        let id = id.to_string();
        self.read(move |conn| select_photo(conn, &id)).await
    }

    pub async fn list(
        &self,
        status: Option<Status>,
        after: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<PhotoRecord>> {
        let after = after.unwrap_or(i64::MIN);
        let limit = sql_limit(limit);
        self.read(move |conn| {
            // Two statements rather than `(?1 IS NULL OR status = ?1)`, so
            // the filtered one walks the (status, seq) index.
            let raws = match status {
                Some(status) => {
                    let mut stmt = conn
                        .prepare_cached(&format!(
                            "SELECT {PHOTO_COLUMNS} FROM photos \
                             WHERE status = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                        ))
                        .map_err(db_err)?;
                    let rows = stmt
                        .query_map(params![status.as_str(), after, limit], RawPhoto::from_row)
                        .map_err(db_err)?;
                    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)?
                }
                None => {
                    let mut stmt = conn
                        .prepare_cached(&format!(
                            "SELECT {PHOTO_COLUMNS} FROM photos \
                             WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                        ))
                        .map_err(db_err)?;
                    let rows = stmt
                        .query_map(params![after, limit], RawPhoto::from_row)
                        .map_err(db_err)?;
                    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)?
                }
            };
            raws.into_iter().map(RawPhoto::decode).collect()
        })
        .await
    }

    pub async fn transitions(&self, chain: &[Transition]) -> StoreResult<Option<PhotoRecord>> {
        let chain = chain.to_vec();
        self.write(move |conn| {
            let Some(first) = chain.first() else {
                return Ok(None);
            };
            // IMMEDIATE: the write lock is held from the status check to the
            // commit, so of two workers racing on one photo exactly one sees
            // `from` (the other waits, then reads the new status).
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let Some(mut record) = select_photo(&tx, &first.photo_id)? else {
                return Ok(None);
            };
            if !record.apply_chain(&chain) {
                return Ok(None);
            }
            if chain.iter().any(|t| t.keywords.is_some()) {
                tx.execute(
                    "DELETE FROM photo_keywords WHERE photo_seq = ?1",
                    params![record.seq],
                )
                .map_err(db_err)?;
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO photo_keywords (keyword, photo_seq, photo_id) \
                         VALUES (?1, ?2, ?3)",
                    )
                    .map_err(db_err)?;
                for keyword in &record.keywords {
                    stmt.execute(params![keyword, record.seq, record.id])
                        .map_err(db_err)?;
                }
            }
            let updated = tx
                .execute(
                    "UPDATE photos SET status = ?1, history = ?2, analysis = ?3, review = ?4, \
                     human_review = ?5, keywords = ?6, error = ?7, updated_ms = ?8 \
                     WHERE seq = ?9 AND status = ?10",
                    params![
                        record.status.as_str(),
                        to_json(&record.history)?,
                        opt_json(&record.analysis)?,
                        opt_json(&record.review)?,
                        opt_json(&record.human_review)?,
                        to_json(&record.keywords)?,
                        record.error,
                        record.updated_ms,
                        record.seq,
                        first.from.as_str(),
                    ],
                )
                .map_err(db_err)?;
            if updated != 1 {
                // Cannot happen under the write lock; if it did, write nothing.
                return Ok(None);
            }
            for t in &chain {
                if let Some(embedding) = &t.embedding {
                    upsert_embedding(&tx, record.seq, embedding, t.at_ms)?;
                }
                insert_events(&tx, &t.events)?;
            }
            tx.commit().map_err(db_err)?;
            Ok(Some(record))
        })
        .await
    }

    pub async fn pending(&self) -> StoreResult<u64> {
        let in_flight: Vec<&'static str> = Status::ALL
            .into_iter()
            .filter(|s| !s.is_outcome())
            .map(Status::as_str)
            .collect();
        self.read(move |conn| {
            let placeholders = vec!["?"; in_flight.len()].join(", ");
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT COUNT(*) FROM photos WHERE status IN ({placeholders})"
                ))
                .map_err(db_err)?;
            let n: i64 = stmt
                .query_row(rusqlite::params_from_iter(in_flight), |r| r.get(0))
                .map_err(db_err)?;
            Ok(n as u64)
        })
        .await
    }

    pub async fn count_by_status(&self) -> StoreResult<Vec<(Status, u64)>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT status, COUNT(*) FROM photos GROUP BY status")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            let mut counts = Vec::with_capacity(rows.len());
            for (status, n) in rows {
                let parsed = Status::parse(&status).ok_or_else(|| StoreError::Corrupt {
                    id: format!("status {status:?}"),
                    reason: "not a known status".into(),
                })?;
                counts.push((parsed, n as u64));
            }
            // The order of Status::ALL, whatever order SQLite grouped in.
            counts.sort_by_key(|(s, _)| Status::ALL.iter().position(|a| a == s));
            Ok(counts)
        })
        .await
    }

    pub async fn photos_with_keyword(
        &self,
        keyword: &str,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let keyword = keyword.to_string();
        let limit = sql_limit(limit);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT photo_id FROM photo_keywords WHERE keyword = ?1 \
                     ORDER BY photo_seq LIMIT ?2",
                )
                .map_err(db_err)?;
            let ids = stmt
                .query_map(params![keyword, limit], |r| r.get(0))
                .map_err(db_err)?
                .collect::<Result<Vec<String>, _>>()
                .map_err(db_err)?;
            Ok(ids)
        })
        .await
    }

    pub async fn get_embedding(
        &self,
        id: &str,
        model: Option<&str>,
    ) -> StoreResult<Option<StoredEmbedding>> {
        let (id, model) = (id.to_string(), model.map(String::from));
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT e.model, e.version, e.vector FROM photo_embeddings e \
                     JOIN photos p ON p.seq = e.photo_seq \
                     WHERE p.id = ?1 AND (?2 IS NULL OR e.model = ?2) \
                     ORDER BY e.updated_ms DESC, e.model LIMIT 1",
                )
                .map_err(db_err)?
                .query_row(params![id, model], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .optional()
                .map_err(db_err)?;
            row.map(|(model, version, bytes)| stored_embedding(&id, model, version, &bytes))
                .transpose()
        })
        .await
    }

    pub async fn put_embedding(
        &self,
        id: &str,
        embedding: &StoredEmbedding,
        at_ms: i64,
        events: &[Event],
    ) -> StoreResult<bool> {
        let (id, embedding, events) = (id.to_string(), embedding.clone(), events.to_vec());
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let seq: Option<i64> = tx
                .prepare_cached("SELECT seq FROM photos WHERE id = ?1")
                .map_err(db_err)?
                .query_row(params![id], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            let Some(seq) = seq else {
                return Ok(false);
            };
            upsert_embedding(&tx, seq, &embedding, at_ms)?;
            insert_events(&tx, &events)?;
            tx.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    pub async fn missing_embeddings(
        &self,
        model: &str,
        version: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String)>> {
        let (model, version, limit) = (model.to_string(), version.to_string(), sql_limit(limit));
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT p.seq, p.id FROM photos p WHERE p.seq > ?3 AND {MISSING} \
                     ORDER BY p.seq LIMIT ?4"
                ))
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![model, version, after, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            Ok(rows)
        })
        .await
    }

    pub async fn count_missing_embeddings(&self, model: &str, version: &str) -> StoreResult<u64> {
        let (model, version) = (model.to_string(), version.to_string());
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached(&format!("SELECT COUNT(*) FROM photos p WHERE {MISSING}"))
                .map_err(db_err)?
                .query_row(params![model, version], |r| r.get(0))
                .map_err(db_err)?;
            Ok(n as u64)
        })
        .await
    }

    pub async fn append_events(&self, events: &[Event]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            insert_events(&tx, &events)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    pub async fn record_dead(&self, dead: &DeadJob, events: &[Event]) -> StoreResult<()> {
        let dead = dead.clone();
        let events = events.to_vec();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            // Delete then insert (not an upsert): a job dead again after a
            // retry goes to the end of the list with a new seq.
            tx.execute(
                "DELETE FROM dead_jobs WHERE job_id = ?1",
                params![dead.job.id],
            )
            .map_err(db_err)?;
            tx.execute(
                "INSERT INTO dead_jobs (job_id, job, attempts, error, at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    dead.job.id,
                    to_json(&dead.job)?,
                    dead.attempts,
                    dead.error,
                    dead.at_ms,
                ],
            )
            .map_err(db_err)?;
            insert_events(&tx, &events)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    pub async fn list_dead(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<DeadJob>> {
        let after = after.unwrap_or(i64::MIN);
        let limit = sql_limit(limit);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, job_id, job, attempts, error, at_ms FROM dead_jobs \
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(db_err)?;
            let raws = stmt
                .query_map(params![after, limit], RawDead::from_row)
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            raws.into_iter().map(RawDead::decode).collect()
        })
        .await
    }

    pub async fn get_dead(&self, job_id: &str) -> StoreResult<Option<DeadJob>> {
        let job_id = job_id.to_string();
        self.read(move |conn| {
            let raw = conn
                .prepare_cached(
                    "SELECT seq, job_id, job, attempts, error, at_ms FROM dead_jobs \
                     WHERE job_id = ?1",
                )
                .map_err(db_err)?
                .query_row(params![job_id], RawDead::from_row)
                .optional()
                .map_err(db_err)?;
            raw.map(RawDead::decode).transpose()
        })
        .await
    }

    pub async fn remove_dead(&self, job_id: &str, events: &[Event]) -> StoreResult<bool> {
        let job_id = job_id.to_string();
        let events = events.to_vec();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let removed = tx
                .execute("DELETE FROM dead_jobs WHERE job_id = ?1", params![job_id])
                .map_err(db_err)?
                > 0;
            // The events describe the removal: none when nothing was removed
            // (a second retry of the same dead job).
            if removed {
                insert_events(&tx, &events)?;
            }
            tx.commit().map_err(db_err)?;
            Ok(removed)
        })
        .await
    }

    pub async fn last_event_seq(&self) -> StoreResult<u64> {
        self.read(|conn| {
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
            .map_err(db_err)
        })
        .await
    }

    pub async fn read_events(&self, after: u64, limit: usize) -> StoreResult<Vec<LoggedEvent>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = sql_limit(limit);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, id, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![after, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            rows.into_iter()
                .map(|(seq, id, body)| {
                    Ok(LoggedEvent {
                        seq: seq as u64,
                        event: from_json(&id, &body)?,
                    })
                })
                .collect()
        })
        .await
    }

    pub async fn delete_events(&self, seqs: &[u64]) -> StoreResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let seqs = seqs.to_vec();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            {
                let mut stmt = tx
                    .prepare_cached("DELETE FROM events WHERE seq = ?1")
                    .map_err(db_err)?;
                for seq in seqs {
                    // A seq past i64 names no row.
                    if let Ok(seq) = i64::try_from(seq) {
                        stmt.execute(params![seq]).map_err(db_err)?;
                    }
                }
            }
            tx.commit().map_err(db_err)
        })
        .await
    }
}

mod concepts;
mod feedback;
mod rows;
#[cfg(test)]
mod tests;

pub(crate) use rows::db_err;
use rows::*;
