//! The scale-out metadata store: PostgreSQL, the same tables as the SQLite
//! twin ([`super::sqlite`]) in a schema of their own.
//!
//! - `photos`: one row per photo; the JSON-shaped parts (history,
//!   submission, original, analysis, reviews, keywords) are TEXT holding
//!   JSON, as in SQLite, so the two backends read and write the same shapes
//!   and the SQL stays close. `seq` (BIGSERIAL) is the upload order.
//! - `photo_keywords`: the search index, rewritten with the keywords.
//! - `photo_embeddings`: one embedding per photo and model, float32
//!   little-endian in a BYTEA, written with the analysis.
//! - `dead_jobs`: the dead-letter list, one row per job id.
//! - `events`: the OUTBOX. Every change writes its events here in its own
//!   transaction; the relay ([`crate::queue::nats::run_relay`]) publishes
//!   them to JetStream and deletes them. It is not the event log: readers
//!   read the `<prefix>_EVENTS` stream.
//!
//! Concurrency: a compare-and-set transition locks its row (`SELECT ... FOR
//! UPDATE`) and checks the status, so two workers racing on one photo leave
//! one result, in any number of processes. The pool is a handful of
//! connections, each behind a mutex; a transaction holds one connection
//! throughout. A connection the server dropped is replaced on next use, so
//! the store recovers by itself after a database restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, GenericClient, NoTls, Row, Statement};

use super::{stored_embedding, StoreError, StoreResult};
use crate::analysis::StoredEmbedding;
use crate::event::{Event, LoggedEvent};
use crate::job::{DeadJob, Job};
use crate::photo::{NewPhoto, PhotoRecord, StageEntry, Status, Transition};

/// How long opening one connection may take before the database counts as
/// unreachable (a firewalled host otherwise hangs for the OS's timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The tables, created if missing at start-up. Runs in one transaction under
/// an advisory lock (see [`PgStore::open`]).
const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS photos (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT UNIQUE NOT NULL,
    status       TEXT NOT NULL,
    history      TEXT NOT NULL,
    submission   TEXT NOT NULL,
    original     TEXT NOT NULL,
    analysis     TEXT,
    review       TEXT,
    human_review TEXT,
    keywords     TEXT NOT NULL,
    error        TEXT,
    created_ms   BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS photos_status_seq ON photos (status, seq);
CREATE TABLE IF NOT EXISTS photo_keywords (
    keyword   TEXT NOT NULL,
    photo_seq BIGINT NOT NULL,
    photo_id  TEXT NOT NULL,
    PRIMARY KEY (keyword, photo_seq)
);
CREATE INDEX IF NOT EXISTS photo_keywords_photo ON photo_keywords (photo_seq);
CREATE TABLE IF NOT EXISTS photo_embeddings (
    photo_seq  BIGINT NOT NULL REFERENCES photos (seq) ON DELETE CASCADE,
    model      TEXT NOT NULL,
    version    TEXT NOT NULL,
    dims       INTEGER NOT NULL,
    vector     BYTEA NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (photo_seq, model)
);
CREATE TABLE IF NOT EXISTS dead_jobs (
    seq      BIGSERIAL PRIMARY KEY,
    job_id   TEXT UNIQUE NOT NULL,
    job      TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    error    TEXT NOT NULL,
    at_ms    BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq      BIGSERIAL PRIMARY KEY,
    id       TEXT UNIQUE NOT NULL,
    type     TEXT NOT NULL,
    photo_id TEXT NOT NULL,
    at_ms    BIGINT NOT NULL,
    body     TEXT NOT NULL
);
";

/// The photo columns, in the order [`photo_from_row`] reads them.
macro_rules! photo_columns {
    () => {
        "seq, id, status, history, submission, original, analysis, review, human_review, \
         keywords, error, created_ms, updated_ms"
    };
}

/// The dead-letter columns, in the order [`dead_from_row`] reads them.
macro_rules! dead_columns {
    () => {
        "seq, job_id, job, attempts, error, at_ms"
    };
}

const SELECT_PHOTO: &str = concat!("SELECT ", photo_columns!(), " FROM photos WHERE id = $1");
const SELECT_PHOTO_FOR_UPDATE: &str = concat!(
    "SELECT ",
    photo_columns!(),
    " FROM photos WHERE id = $1 FOR UPDATE"
);
const INSERT_PHOTO: &str = "INSERT INTO photos (id, status, history, submission, original, \
     keywords, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, '[]', $6, $6) \
     ON CONFLICT (id) DO NOTHING RETURNING seq";
const UPDATE_PHOTO: &str = "UPDATE photos SET status = $2, history = $3, analysis = $4, \
     review = $5, human_review = $6, keywords = $7, error = $8, updated_ms = $9 WHERE seq = $1";
const DELETE_KEYWORDS: &str = "DELETE FROM photo_keywords WHERE photo_seq = $1";
const INSERT_KEYWORD: &str = "INSERT INTO photo_keywords (keyword, photo_seq, photo_id) \
     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
const INSERT_EVENT: &str = "INSERT INTO events (id, type, photo_id, at_ms, body) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING";
const UPSERT_EMBEDDING: &str = "INSERT INTO photo_embeddings \
     (photo_seq, model, version, dims, vector, updated_ms) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (photo_seq, model) DO UPDATE SET version = EXCLUDED.version, \
     dims = EXCLUDED.dims, vector = EXCLUDED.vector, updated_ms = EXCLUDED.updated_ms";
/// An analysed photo without an embedding of model $1 at version $2.
macro_rules! missing_embedding {
    () => {
        "p.analysis IS NOT NULL AND NOT EXISTS (SELECT 1 FROM photo_embeddings e \
         WHERE e.photo_seq = p.seq AND e.model = $1 AND e.version = $2)"
    };
}
/// A job dead-lettered again replaces its entry and moves to the end of the
/// list (`seq = DEFAULT` draws a new one), in one statement so two workers
/// recording the same job at once cannot collide on the unique job id.
const UPSERT_DEAD: &str = "INSERT INTO dead_jobs (job_id, job, attempts, error, at_ms) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id) DO UPDATE SET seq = DEFAULT, \
     job = EXCLUDED.job, attempts = EXCLUDED.attempts, error = EXCLUDED.error, \
     at_ms = EXCLUDED.at_ms";

/// A pooled connection and the statements prepared on it (a statement
/// prepared once is executed in one round trip instead of two).
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// Prepares `sql` on the connection behind `client` (a client or one of its
/// transactions), once per connection.
async fn statement<C: GenericClient + Sync>(
    statements: &mut HashMap<&'static str, Statement>,
    client: &C,
    sql: &'static str,
) -> StoreResult<Statement> {
    if let Some(s) = statements.get(sql) {
        return Ok(s.clone());
    }
    let prepared = client.prepare(sql).await.map_err(pg_error)?;
    statements.insert(sql, prepared.clone());
    Ok(prepared)
}

struct Inner {
    url: String,
    schema: String,
    /// `None` until connected, and again after the server dropped it.
    slots: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
}

/// The PostgreSQL store. Clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

/// One connection taken from the pool for the length of an operation.
struct Lease<'a> {
    guard: MutexGuard<'a, Option<Conn>>,
}

impl Lease<'_> {
    fn conn(&mut self) -> &mut Conn {
        self.guard
            .as_mut()
            .expect("PgStore::acquire leaves the slot connected")
    }
}

impl PgStore {
    /// Connects `connections` clients (at least one), creates `schema` and
    /// the tables if missing, and points every client's `search_path` at
    /// the schema.
    ///
    /// The DDL runs in one transaction holding an advisory lock keyed on
    /// the schema name: `CREATE ... IF NOT EXISTS` alone is not safe when
    /// two processes start at once (both see the table missing, one fails
    /// on the catalog's unique index).
    pub async fn open(url: &str, schema: &str, connections: usize) -> StoreResult<PgStore> {
        if schema.is_empty() {
            return Err(StoreError::Backend("metadata.schema is empty".into()));
        }
        let inner = Inner {
            url: url.to_string(),
            schema: schema.to_string(),
            slots: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        };
        let store = PgStore {
            inner: Arc::new(inner),
        };
        for slot in &store.inner.slots {
            *slot.lock().await = Some(store.connect().await?);
        }
        {
            let mut lease = store.acquire().await?;
            let conn = lease.conn();
            let tx = conn.client.transaction().await.map_err(pg_error)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&format!("darkroom.pipeline.schema:{schema}")],
            )
            .await
            .map_err(pg_error)?;
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {};\n{SCHEMA_SQL}\n{}\n{}",
                quote_ident(schema),
                concepts::SCHEMA_SQL,
                feedback::SCHEMA_SQL
            ))
            .await
            .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)?;
        }
        Ok(store)
    }

    /// Opens one connection, its driver task spawned on the runtime, with
    /// `search_path` set to the schema (only: a table missing from the
    /// schema must not be found in `public`).
    async fn connect(&self) -> StoreResult<Conn> {
        let url = &self.inner.url;
        let (client, connection) = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_postgres::connect(url, NoTls),
        )
        .await
        {
            Ok(Ok(pair)) => pair,
            // A refused login or a missing database is not a passing
            // outage, but either way the database cannot be reached.
            Ok(Err(e)) => {
                return Err(StoreError::Unavailable(format!(
                    "connecting to {}: {e}",
                    redact(url)
                )))
            }
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "connecting to {}: no answer within {}s",
                    redact(url),
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
        };
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the
            // next query then fails as closed and the slot reconnects.
            let _ = connection.await;
        });
        client
            .batch_execute(&format!(
                "SET search_path TO {}",
                quote_ident(&self.inner.schema)
            ))
            .await
            .map_err(pg_error)?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }

    /// A free connection if there is one (round robin from the next slot),
    /// else waits for the next slot's. Reconnects a slot whose connection
    /// the server closed.
    async fn acquire(&self) -> StoreResult<Lease<'_>> {
        let slots = &self.inner.slots;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % slots.len();
        let mut guard = None;
        for i in 0..slots.len() {
            if let Ok(g) = slots[(start + i) % slots.len()].try_lock() {
                guard = Some(g);
                break;
            }
        }
        let mut guard = match guard {
            Some(g) => g,
            None => slots[start].lock().await,
        };
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = None;
            *guard = Some(self.connect().await?);
        }
        Ok(Lease { guard })
    }

    pub async fn insert_photo(
        &self,
        photo: &NewPhoto,
        events: &[Event],
    ) -> StoreResult<(PhotoRecord, bool)> {
        let history = vec![StageEntry {
            status: Status::Stored,
            at_ms: photo.at_ms,
            by: photo.by.clone(),
        }];
        let history_json = to_json(&history)?;
        let submission_json = to_json(&photo.submission)?;
        let original_json = to_json(&photo.original)?;
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        let insert = statement(statements, &tx, INSERT_PHOTO).await?;
        let inserted = tx
            .query_opt(
                &insert,
                &[
                    &photo.id,
                    &Status::Stored.as_str(),
                    &history_json,
                    &submission_json,
                    &original_json,
                    &photo.at_ms,
                ],
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = inserted else {
            // Already there (or inserted by a concurrent upload that has
            // committed by now: ON CONFLICT waited for it).
            let select = statement(statements, &tx, SELECT_PHOTO).await?;
            let row = tx
                .query_opt(&select, &[&photo.id])
                .await
                .map_err(pg_error)?
                .ok_or_else(|| {
                    StoreError::Backend(format!(
                        "photo {} conflicted on insert but cannot be read",
                        photo.id
                    ))
                })?;
            let record = photo_from_row(&row)?;
            tx.commit().await.map_err(pg_error)?;
            return Ok((record, false));
        };
        let seq: i64 = row.try_get(0).map_err(pg_error)?;
        append_in(statements, &tx, events).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok((
            PhotoRecord {
                id: photo.id.clone(),
                seq,
                status: Status::Stored,
                history,
                submission: photo.submission.clone(),
                original: photo.original.clone(),
                analysis: None,
                review: None,
                human_review: None,
                keywords: Vec::new(),
                error: None,
                created_ms: photo.at_ms,
                updated_ms: photo.at_ms,
            },
            true,
        ))
    }

    pub async fn get(&self, id: &str) -> StoreResult<Option<PhotoRecord>> {
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let select = statement(statements, client, SELECT_PHOTO).await?;
        let row = client.query_opt(&select, &[&id]).await.map_err(pg_error)?;
        row.as_ref().map(photo_from_row).transpose()
    }

    pub async fn list(
        &self,
        status: Option<Status>,
        after: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<PhotoRecord>> {
        const BY_SEQ: &str = concat!(
            "SELECT ",
            photo_columns!(),
            " FROM photos WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        // (status, seq) is indexed: this one reads only the status's rows.
        const BY_STATUS: &str = concat!(
            "SELECT ",
            photo_columns!(),
            " FROM photos WHERE status = $3 AND seq > $1 ORDER BY seq LIMIT $2"
        );
        let after = after.unwrap_or(i64::MIN);
        let limit = sql_limit(limit);
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let rows = match status {
            None => {
                let s = statement(statements, client, BY_SEQ).await?;
                client.query(&s, &[&after, &limit]).await
            }
            Some(status) => {
                let s = statement(statements, client, BY_STATUS).await?;
                client.query(&s, &[&after, &limit, &status.as_str()]).await
            }
        }
        .map_err(pg_error)?;
        rows.iter().map(photo_from_row).collect()
    }

    pub async fn transitions(&self, chain: &[Transition]) -> StoreResult<Option<PhotoRecord>> {
        let Some(first) = chain.first() else {
            return Ok(None);
        };
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        let select = statement(statements, &tx, SELECT_PHOTO_FOR_UPDATE).await?;
        let Some(row) = tx
            .query_opt(&select, &[&first.photo_id])
            .await
            .map_err(pg_error)?
        else {
            // Dropping the transaction rolls it back.
            return Ok(None);
        };
        let mut record = photo_from_row(&row)?;
        if !record.apply_chain(chain) {
            return Ok(None);
        }
        let update = statement(statements, &tx, UPDATE_PHOTO).await?;
        tx.execute(
            &update,
            &[
                &record.seq,
                &record.status.as_str(),
                &to_json(&record.history)?,
                &record.analysis.as_ref().map(to_json).transpose()?,
                &record.review.as_ref().map(to_json).transpose()?,
                &record.human_review.as_ref().map(to_json).transpose()?,
                &to_json(&record.keywords)?,
                &record.error,
                &record.updated_ms,
            ],
        )
        .await
        .map_err(pg_error)?;
        if chain.iter().any(|t| t.keywords.is_some()) {
            let delete = statement(statements, &tx, DELETE_KEYWORDS).await?;
            tx.execute(&delete, &[&record.seq])
                .await
                .map_err(pg_error)?;
            let insert = statement(statements, &tx, INSERT_KEYWORD).await?;
            for keyword in &record.keywords {
                tx.execute(&insert, &[keyword, &record.seq, &record.id])
                    .await
                    .map_err(pg_error)?;
            }
        }
        let mut events = Vec::new();
        for t in chain {
            if let Some(embedding) = &t.embedding {
                upsert_embedding(statements, &tx, record.seq, embedding, t.at_ms).await?;
            }
            events.extend_from_slice(&t.events);
        }
        append_in(statements, &tx, &events).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Some(record))
    }

    pub async fn pending(&self) -> StoreResult<u64> {
        const SQL: &str = "SELECT count(*) FROM photos \
             WHERE status IN ('stored', 'analyzed', 'reviewed', 'indexed')";
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let row = client.query_one(&s, &[]).await.map_err(pg_error)?;
        let n: i64 = row.try_get(0).map_err(pg_error)?;
        Ok(n.max(0) as u64)
    }

    pub async fn count_by_status(&self) -> StoreResult<Vec<(Status, u64)>> {
        const SQL: &str = "SELECT status, count(*) FROM photos GROUP BY status";
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let rows = client.query(&s, &[]).await.map_err(pg_error)?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in &rows {
            let name: String = row.try_get(0).map_err(pg_error)?;
            let n: i64 = row.try_get(1).map_err(pg_error)?;
            let status = Status::parse(&name).ok_or_else(|| StoreError::Corrupt {
                id: format!("status {name:?}"),
                reason: "not a known status".into(),
            })?;
            counts.push((status, n.max(0) as u64));
        }
        // The pipeline's order, not the database's.
        counts.sort_by_key(|(s, _)| Status::ALL.iter().position(|a| a == s));
        Ok(counts)
    }

    pub async fn photos_with_keyword(
        &self,
        keyword: &str,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        const SQL: &str = "SELECT photo_id FROM photo_keywords WHERE keyword = $1 \
             ORDER BY photo_seq LIMIT $2";
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let rows = client
            .query(&s, &[&keyword, &sql_limit(limit)])
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| r.try_get::<_, String>(0).map_err(pg_error))
            .collect()
    }

    pub async fn get_embedding(
        &self,
        id: &str,
        model: Option<&str>,
    ) -> StoreResult<Option<StoredEmbedding>> {
        const SQL: &str = "SELECT e.model, e.version, e.vector FROM photo_embeddings e \
             JOIN photos p ON p.seq = e.photo_seq \
             WHERE p.id = $1 AND ($2::TEXT IS NULL OR e.model = $2) \
             ORDER BY e.updated_ms DESC, e.model LIMIT 1";
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let row = client
            .query_opt(&s, &[&id, &model])
            .await
            .map_err(pg_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let bytes: Vec<u8> = row.try_get(2).map_err(pg_error)?;
        stored_embedding(
            id,
            row.try_get(0).map_err(pg_error)?,
            row.try_get(1).map_err(pg_error)?,
            &bytes,
        )
        .map(Some)
    }

    pub async fn put_embedding(
        &self,
        id: &str,
        embedding: &StoredEmbedding,
        at_ms: i64,
        events: &[Event],
    ) -> StoreResult<bool> {
        const SEQ: &str = "SELECT seq FROM photos WHERE id = $1";
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        let s = statement(statements, &tx, SEQ).await?;
        let Some(row) = tx.query_opt(&s, &[&id]).await.map_err(pg_error)? else {
            return Ok(false);
        };
        let seq: i64 = row.try_get(0).map_err(pg_error)?;
        upsert_embedding(statements, &tx, seq, embedding, at_ms).await?;
        append_in(statements, &tx, events).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    pub async fn missing_embeddings(
        &self,
        model: &str,
        version: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String)>> {
        const SQL: &str = concat!(
            "SELECT p.seq, p.id FROM photos p WHERE p.seq > $3 AND ",
            missing_embedding!(),
            " ORDER BY p.seq LIMIT $4"
        );
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let rows = client
            .query(&s, &[&model, &version, &after, &sql_limit(limit)])
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

    pub async fn count_missing_embeddings(&self, model: &str, version: &str) -> StoreResult<u64> {
        const SQL: &str = concat!("SELECT count(*) FROM photos p WHERE ", missing_embedding!());
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let row = client
            .query_one(&s, &[&model, &version])
            .await
            .map_err(pg_error)?;
        let n: i64 = row.try_get(0).map_err(pg_error)?;
        Ok(n.max(0) as u64)
    }

    pub async fn append_events(&self, events: &[Event]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        append_in(statements, &tx, events).await?;
        tx.commit().await.map_err(pg_error)
    }

    pub async fn record_dead(&self, dead: &DeadJob, events: &[Event]) -> StoreResult<()> {
        let job = to_json(&dead.job)?;
        let attempts = i32::try_from(dead.attempts).unwrap_or(i32::MAX);
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        let upsert = statement(statements, &tx, UPSERT_DEAD).await?;
        tx.execute(
            &upsert,
            &[&dead.job.id, &job, &attempts, &dead.error, &dead.at_ms],
        )
        .await
        .map_err(pg_error)?;
        append_in(statements, &tx, events).await?;
        tx.commit().await.map_err(pg_error)
    }

    pub async fn list_dead(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<DeadJob>> {
        const SQL: &str = concat!(
            "SELECT ",
            dead_columns!(),
            " FROM dead_jobs WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let rows = client
            .query(&s, &[&after.unwrap_or(i64::MIN), &sql_limit(limit)])
            .await
            .map_err(pg_error)?;
        rows.iter().map(dead_from_row).collect()
    }

    pub async fn get_dead(&self, job_id: &str) -> StoreResult<Option<DeadJob>> {
        const SQL: &str = concat!(
            "SELECT ",
            dead_columns!(),
            " FROM dead_jobs WHERE job_id = $1"
        );
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let row = client.query_opt(&s, &[&job_id]).await.map_err(pg_error)?;
        row.as_ref().map(dead_from_row).transpose()
    }

    /// The events are written only when the entry was there to remove (two
    /// API calls retrying the same job record one retry).
    pub async fn remove_dead(&self, job_id: &str, events: &[Event]) -> StoreResult<bool> {
        const SQL: &str = "DELETE FROM dead_jobs WHERE job_id = $1";
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let tx = client.transaction().await.map_err(pg_error)?;
        let s = statement(statements, &tx, SQL).await?;
        let removed = tx.execute(&s, &[&job_id]).await.map_err(pg_error)? > 0;
        if removed {
            append_in(statements, &tx, events).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(removed)
    }

    /// The outbox rows with `seq > after`. Sequence values are drawn at
    /// insert, not at commit, so a reader that keeps a cursor could step over
    /// a row committed late; the relay therefore always reads from 0 and
    /// deletes what it has published.
    pub async fn last_event_seq(&self) -> StoreResult<u64> {
        const SQL: &str = "SELECT COALESCE(MAX(seq), 0)::BIGINT FROM events";
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let row = client.query_one(&s, &[]).await.map_err(pg_error)?;
        let n: i64 = row.try_get(0).map_err(pg_error)?;
        Ok(n.max(0) as u64)
    }

    pub async fn read_events(&self, after: u64, limit: usize) -> StoreResult<Vec<LoggedEvent>> {
        const SQL: &str = "SELECT seq, id, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2";
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        let rows = client
            .query(&s, &[&after, &sql_limit(limit)])
            .await
            .map_err(pg_error)?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get(0).map_err(pg_error)?;
            let id: String = row.try_get(1).map_err(pg_error)?;
            let body: String = row.try_get(2).map_err(pg_error)?;
            let event = from_json(&body, &format!("event {id}"))?;
            events.push(LoggedEvent {
                seq: seq.max(0) as u64,
                event,
            });
        }
        Ok(events)
    }

    pub async fn delete_events(&self, seqs: &[u64]) -> StoreResult<()> {
        const SQL: &str = "DELETE FROM events WHERE seq = ANY($1)";
        if seqs.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = seqs.iter().filter_map(|s| i64::try_from(*s).ok()).collect();
        let mut lease = self.acquire().await?;
        let Conn { client, statements } = lease.conn();
        let s = statement(statements, client, SQL).await?;
        client.execute(&s, &[&seqs]).await.map_err(pg_error)?;
        Ok(())
    }
}

mod concepts;
mod feedback;
mod rows;

use rows::*;

/// Drops `schema` and everything in it: for tests and benchmarks that made
/// a schema of their own, and for resetting a staging deployment.
pub async fn drop_schema(url: &str, schema: &str) -> StoreResult<()> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| StoreError::Unavailable(format!("connecting to {}: {e}", redact(url))))?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(schema)
        ))
        .await
        .map_err(pg_error)
}
