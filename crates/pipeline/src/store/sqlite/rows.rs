//! Row helpers of the SQLite store: connection settings, JSON columns,
//! and the raw rows photo records and dead letters are read from.

use super::*;

/// Per-connection settings: none of these persist in the file except
/// `journal_mode`.
pub(super) fn configure(
    conn: &Connection,
    busy: Duration,
    query_only: bool,
) -> rusqlite::Result<()> {
    // The busy timeout first: switching to WAL takes a lock that another
    // process opening the file at the same moment may hold.
    conn.busy_timeout(busy)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // WAL is what lets the API read while a worker writes, and several
        // processes share the file; without it (some network filesystems)
        // they would block each other. Refuse rather than limp.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!(
                "journal_mode is {mode:?}, not WAL (is the file on a network filesystem?)"
            )),
        ));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if query_only {
        conn.pragma_update(None, "query_only", "ON")?;
    }
    Ok(())
}

/// Runs blocking database work on tokio's blocking pool.
pub(super) async fn blocking<T, F>(f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> StoreResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("database task failed: {e}")))?
}

/// Locks a connection. A panic while it was held (poisoning) left no open
/// transaction behind — `Transaction` rolls back when dropped — so the
/// connection is still good to use.
pub(super) fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Busy and locked (another process holds the lock past the timeout) and a
/// file that cannot be opened are worth retrying; the rest is not.
pub(crate) fn db_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// A `LIMIT` bound: SQLite takes an i64; a usize past it means "all".
pub(super) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(super) fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("serialising: {e}")))
}

pub(super) fn opt_json<T: Serialize>(value: &Option<T>) -> StoreResult<Option<String>> {
    value.as_ref().map(to_json).transpose()
}

pub(super) fn from_json<T: DeserializeOwned>(id: &str, json: &str) -> StoreResult<T> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        id: id.to_string(),
        reason: e.to_string(),
    })
}

pub(super) fn opt_from_json<T: DeserializeOwned>(
    id: &str,
    json: Option<String>,
) -> StoreResult<Option<T>> {
    json.map(|j| from_json(id, &j)).transpose()
}

pub(super) fn insert_events(conn: &Connection, events: &[Event]) -> StoreResult<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO events (id, type, photo_id, at_ms, body) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(db_err)?;
    for event in events {
        stmt.execute(params![
            event.id,
            event.kind.name(),
            event.photo_id,
            event.at_ms,
            to_json(event)?,
        ])
        .map_err(db_err)?;
    }
    Ok(())
}

/// Adds or replaces a photo's embedding of `embedding.model`.
pub(super) fn upsert_embedding(
    conn: &Connection,
    seq: i64,
    embedding: &StoredEmbedding,
    at_ms: i64,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO photo_embeddings (photo_seq, model, version, dims, vector, updated_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (photo_seq, model) DO UPDATE SET \
         version = excluded.version, dims = excluded.dims, vector = excluded.vector, \
         updated_ms = excluded.updated_ms",
    )
    .map_err(db_err)?
    .execute(params![
        seq,
        embedding.model,
        embedding.version,
        embedding.vector.dims() as i64,
        embedding.vector.to_le_bytes(),
        at_ms,
    ])
    .map_err(db_err)?;
    Ok(())
}

pub(super) fn select_photo(conn: &Connection, id: &str) -> StoreResult<Option<PhotoRecord>> {
    let raw = conn
        .prepare_cached(&format!("SELECT {PHOTO_COLUMNS} FROM photos WHERE id = ?1"))
        .map_err(db_err)?
        .query_row(params![id], RawPhoto::from_row)
        .optional()
        .map_err(db_err)?;
    raw.map(RawPhoto::decode).transpose()
}

/// A `photos` row as stored; decoding the JSON is separate so that a bad
/// column is [`StoreError::Corrupt`] naming the photo, not a SQLite error.
pub(super) struct RawPhoto {
    seq: i64,
    id: String,
    status: String,
    history: String,
    submission: String,
    original: String,
    analysis: Option<String>,
    review: Option<String>,
    human_review: Option<String>,
    keywords: String,
    error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

impl RawPhoto {
    pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<RawPhoto> {
        Ok(RawPhoto {
            seq: r.get(0)?,
            id: r.get(1)?,
            status: r.get(2)?,
            history: r.get(3)?,
            submission: r.get(4)?,
            original: r.get(5)?,
            analysis: r.get(6)?,
            review: r.get(7)?,
            human_review: r.get(8)?,
            keywords: r.get(9)?,
            error: r.get(10)?,
            created_ms: r.get(11)?,
            updated_ms: r.get(12)?,
        })
    }

    pub(super) fn decode(self) -> StoreResult<PhotoRecord> {
        let id = self.id;
        let status = Status::parse(&self.status).ok_or_else(|| StoreError::Corrupt {
            id: id.clone(),
            reason: format!("unknown status {:?}", self.status),
        })?;
        Ok(PhotoRecord {
            seq: self.seq,
            status,
            history: from_json(&id, &self.history)?,
            submission: from_json(&id, &self.submission)?,
            original: from_json(&id, &self.original)?,
            analysis: opt_from_json(&id, self.analysis)?,
            review: opt_from_json(&id, self.review)?,
            human_review: opt_from_json(&id, self.human_review)?,
            keywords: from_json(&id, &self.keywords)?,
            error: self.error,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            id,
        })
    }
}

/// A `dead_jobs` row as stored.
pub(super) struct RawDead {
    seq: i64,
    job_id: String,
    job: String,
    attempts: u32,
    error: String,
    at_ms: i64,
}

impl RawDead {
    pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<RawDead> {
        Ok(RawDead {
            seq: r.get(0)?,
            job_id: r.get(1)?,
            job: r.get(2)?,
            attempts: r.get(3)?,
            error: r.get(4)?,
            at_ms: r.get(5)?,
        })
    }

    pub(super) fn decode(self) -> StoreResult<DeadJob> {
        let job: Job = from_json(&self.job_id, &self.job)?;
        Ok(DeadJob {
            job,
            attempts: self.attempts,
            error: self.error,
            at_ms: self.at_ms,
            seq: self.seq,
        })
    }
}
