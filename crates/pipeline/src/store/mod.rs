//! The metadata store: photo records, their embeddings, the search
//! keywords, trained concepts ([`concepts`]), people's feedback
//! ([`feedback`]), the dead-letter list, and the event log (embedded) or event
//! outbox (scaled out).
//!
//! Two implementations with the same behaviour, checked by one conformance
//! suite (`tests/backends.rs`): SQLite in WAL mode ([`sqlite`]) and
//! PostgreSQL ([`postgres`]). Dispatch is an enum, not a trait object: two
//! backends, known at compile time, with async methods.
//!
//! Every method that changes a photo writes its events in the same
//! transaction, so the log never misses a change and never records one that
//! did not happen.

pub(crate) mod concepts;
pub(crate) mod feedback;
pub mod postgres;
pub mod sqlite;

pub use concepts::ConceptScore;
pub use feedback::FeedbackCursor;

use crate::analysis::{Embedding, StoredEmbedding};
use crate::config::MetadataConfig;
use crate::event::{Event, LoggedEvent};
use crate::job::DeadJob;
use crate::photo::{NewPhoto, PhotoRecord, Status, Transition};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (connection refused, pool closed,
    /// busy past the timeout): worth retrying.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// Anything else the database reported.
    #[error("metadata store error: {0}")]
    Backend(String),
    /// A stored row that no longer parses (written by an incompatible
    /// version, or edited by hand).
    #[error("metadata store: record {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
}

impl StoreError {
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "metadata_unavailable",
            StoreError::Backend(_) => "metadata_error",
            StoreError::Corrupt { .. } => "metadata_corrupt",
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A photo's embedding bytes read back; bytes that are not float32 are corrupt.
fn embedding_from(photo_id: &str, bytes: &[u8]) -> StoreResult<Embedding> {
    Embedding::from_le_bytes(bytes).map_err(|reason| StoreError::Corrupt {
        id: photo_id.to_string(),
        reason,
    })
}

/// An embedding row read back.
fn stored_embedding(
    photo_id: &str,
    model: String,
    version: String,
    bytes: &[u8],
) -> StoreResult<StoredEmbedding> {
    Ok(StoredEmbedding {
        model,
        version,
        vector: embedding_from(photo_id, bytes)?,
    })
}

/// Photo records and what hangs off them. Cheap to clone (shared handles).
#[derive(Clone)]
pub enum MetaStore {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            MetaStore::Sqlite($s) => $call,
            MetaStore::Postgres($s) => $call,
        }
    };
}
pub(crate) use dispatch;

impl MetaStore {
    /// Connects (or opens the file) and creates the tables if missing.
    /// `config` must already be resolved against the home.
    pub async fn open(config: &MetadataConfig) -> StoreResult<MetaStore> {
        Ok(match config {
            MetadataConfig::Sqlite { path } => {
                MetaStore::Sqlite(sqlite::SqliteStore::open(path).await?)
            }
            MetadataConfig::Postgres {
                url,
                schema,
                connections,
            } => MetaStore::Postgres(postgres::PgStore::open(url, schema, *connections).await?),
        })
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            MetaStore::Sqlite(_) => "sqlite",
            MetaStore::Postgres(_) => "postgres",
        }
    }

    /// Inserts a photo in `stored` (its history one entry: stored, at, by)
    /// unless its id exists. Returns the record and whether it was created;
    /// `events` are written only when it was.
    pub async fn insert_photo(
        &self,
        photo: &NewPhoto,
        events: &[Event],
    ) -> StoreResult<(PhotoRecord, bool)> {
        dispatch!(self, s => s.insert_photo(photo, events).await)
    }

    pub async fn get(&self, id: &str) -> StoreResult<Option<PhotoRecord>> {
        dispatch!(self, s => s.get(id).await)
    }

    /// Photos in upload order (`seq` ascending) with `seq > after`, only
    /// those in `status` when given, at most `limit`.
    pub async fn list(
        &self,
        status: Option<Status>,
        after: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<PhotoRecord>> {
        dispatch!(self, s => s.list(status, after, limit).await)
    }

    /// Applies `t` if the photo is in `t.from`: sets status `t.to`, appends
    /// `{t.to, t.at_ms, t.by}` to the history, replaces the fields that are
    /// `Some`, rewrites the keyword rows when `t.keywords` is `Some`, sets
    /// `updated_ms`, and appends `t.events` — one transaction. Returns the
    /// updated record, or `None` when the photo is missing or not in
    /// `t.from` (another worker got there first; nothing is written).
    pub async fn transition(&self, t: &Transition) -> StoreResult<Option<PhotoRecord>> {
        self.transitions(std::slice::from_ref(t)).await
    }

    /// A chain of transitions, each from where the one before left the
    /// photo, in one transaction: all applied (the updated record), or, if
    /// the photo is not in the first one's `from`, none (`None`). The
    /// worker commits the stages that need no outside work (review, index,
    /// publish) with the analysis this way: one commit per photo, not four.
    pub async fn transitions(&self, chain: &[Transition]) -> StoreResult<Option<PhotoRecord>> {
        dispatch!(self, s => s.transitions(chain).await)
    }

    /// Photos not at an outcome (stored, analyzed, reviewed, indexed):
    /// the upload backlog that admission bounds.
    pub async fn pending(&self) -> StoreResult<u64> {
        dispatch!(self, s => s.pending().await)
    }

    /// How many photos are in each status (absent: none).
    pub async fn count_by_status(&self) -> StoreResult<Vec<(Status, u64)>> {
        dispatch!(self, s => s.count_by_status().await)
    }

    /// Photo ids indexed under `keyword`, in upload order.
    pub async fn photos_with_keyword(
        &self,
        keyword: &str,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        dispatch!(self, s => s.photos_with_keyword(keyword, limit).await)
    }

    /// The photo's stored embedding of `model` (any model: the latest
    /// written), or `None` when the photo or the embedding is missing.
    pub async fn get_embedding(
        &self,
        id: &str,
        model: Option<&str>,
    ) -> StoreResult<Option<StoredEmbedding>> {
        dispatch!(self, s => s.get_embedding(id, model).await)
    }

    /// Stores (or replaces) a photo's embedding of `embedding.model` with
    /// `events`, one transaction. False when the photo does not exist.
    pub async fn put_embedding(
        &self,
        id: &str,
        embedding: &StoredEmbedding,
        at_ms: i64,
        events: &[Event],
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.put_embedding(id, embedding, at_ms, events).await)
    }

    /// Analysed photos (`seq > after`, in upload order, at most `limit`)
    /// with no embedding of `model` at `version`: what a backfill computes.
    pub async fn missing_embeddings(
        &self,
        model: &str,
        version: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, String)>> {
        dispatch!(self, s => s.missing_embeddings(model, version, after, limit).await)
    }

    /// How many analysed photos have no embedding of `model` at `version`.
    pub async fn count_missing_embeddings(&self, model: &str, version: &str) -> StoreResult<u64> {
        dispatch!(self, s => s.count_missing_embeddings(model, version).await)
    }

    /// Appends events that go with no photo change (a failed attempt, a
    /// delivered callback). An id already in the log is skipped.
    pub async fn append_events(&self, events: &[Event]) -> StoreResult<()> {
        dispatch!(self, s => s.append_events(events).await)
    }

    /// Adds a job to the dead-letter list (replacing an entry with the same
    /// job id, which gets a new seq) with its events, one transaction.
    pub async fn record_dead(&self, dead: &DeadJob, events: &[Event]) -> StoreResult<()> {
        dispatch!(self, s => s.record_dead(dead, events).await)
    }

    /// The dead-letter list, oldest first, `seq > after`.
    pub async fn list_dead(&self, after: Option<i64>, limit: usize) -> StoreResult<Vec<DeadJob>> {
        dispatch!(self, s => s.list_dead(after, limit).await)
    }

    pub async fn get_dead(&self, job_id: &str) -> StoreResult<Option<DeadJob>> {
        dispatch!(self, s => s.get_dead(job_id).await)
    }

    /// Removes a dead job (it was retried), with its events. False if absent.
    pub async fn remove_dead(&self, job_id: &str, events: &[Event]) -> StoreResult<bool> {
        dispatch!(self, s => s.remove_dead(job_id, events).await)
    }

    /// The last event's seq in the table (0: none).
    pub async fn last_event_seq(&self) -> StoreResult<u64> {
        dispatch!(self, s => s.last_event_seq().await)
    }

    /// Events in the table with `seq > after`, ascending, at most `limit`.
    /// Embedded this is the event log; scaled out, the outbox not yet
    /// published to JetStream.
    pub async fn read_events(&self, after: u64, limit: usize) -> StoreResult<Vec<LoggedEvent>> {
        dispatch!(self, s => s.read_events(after, limit).await)
    }

    /// Deletes events by seq (the relay, once JetStream has them).
    pub async fn delete_events(&self, seqs: &[u64]) -> StoreResult<()> {
        dispatch!(self, s => s.delete_events(seqs).await)
    }
}
