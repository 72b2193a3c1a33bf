//! [`SearchIndex`]: the catalogue a process answers searches from, and
//! [`run`], which keeps it current.
//!
//! On start the catalogue comes from its snapshot when there is one taken
//! against the same event log (a file under the home embedded; an object in
//! the blob store scaled out), or else from the metadata store, read whole.
//! Then every event of the log after the catalogue's position names a photo
//! to read again from the store (its record and its embedding): applying a
//! photo's current state is idempotent, so an event seen twice, or events
//! read out of order across photos, leave the same catalogue. A finished
//! backfill of a trained concept (`concept.backfilled`) applies that
//! concept's scores in bulk; a deleted concept's photos are read again
//! (see [`crate::trained`]). A snapshot is written every `snapshot_every_s`
//! when something changed, and at shutdown.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use pipeline::feedback::{Popularity, Signal};
use pipeline::{EventKind, EventLog, MetaStore};
use tokio::sync::watch;
use vector::{Params, PhotoIndex};

use crate::catalogue::{Catalogue, Doc, Page, Personal, VectorSearch};
use crate::encoder::TermEncoder;
use crate::query::Query;
use crate::text::{plan, Lexicon, Reading};
use crate::trained::{self, Trained};
use crate::{snapshot, SearchError};

/// Photos read from the store per round while building.
const BUILD_PAGE: usize = 1_000;
/// Events read per round while following.
const FOLLOW_BATCH: usize = 500;
/// Photos applied per write lock while following (searches run between).
const APPLY_CHUNK: usize = 64;

/// The `[search]` settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSettings {
    /// The embedding model whose vectors the similar-photo index holds.
    pub model: String,
    /// HNSW search width.
    pub ef: usize,
    /// Results a similar-photo query ranks (what its cursor pages through).
    pub similar_depth: usize,
    /// How often the event log is read when it had nothing new.
    pub poll_ms: u64,
    /// How often a changed catalogue is written as a snapshot.
    pub snapshot_every_s: u64,
    /// The text encoder (a `text_encoder` model of the repository) that
    /// maps a query that is no known word to the nearest concepts; empty:
    /// none, and such a query matches nothing.
    pub text_encoder: String,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            model: "efficientnet-lite0".into(),
            ef: 64,
            similar_depth: 200,
            poll_ms: 250,
            snapshot_every_s: 60,
            text_encoder: "minilm-l6-v2".into(),
        }
    }
}

/// Where the snapshot is kept.
#[derive(Clone)]
pub enum SnapshotPlace {
    /// A file (embedded: under the home).
    File(PathBuf),
    /// An object in the blob store (scaled out: shared by the replicas),
    /// passing through a local folder on the way in and out.
    Blobs {
        blobs: storage::BlobStore,
        key: String,
        scratch: PathBuf,
    },
    /// None (tests, or a replica told not to).
    Nowhere,
}

impl SnapshotPlace {
    pub fn describe(&self) -> String {
        match self {
            SnapshotPlace::File(p) => p.display().to_string(),
            SnapshotPlace::Blobs { blobs, key, .. } => format!("{} {key}", blobs.describe()),
            SnapshotPlace::Nowhere => "nowhere".into(),
        }
    }

    async fn load(&self) -> Result<Option<(Catalogue, String)>, SearchError> {
        match self {
            SnapshotPlace::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || snapshot::load(&path))
                    .await
                    .map_err(|e| SearchError::Internal(e.to_string()))?
            }
            SnapshotPlace::Blobs {
                blobs,
                key,
                scratch,
            } => {
                // Streamed to a local file, then read from it: a snapshot of
                // a million photos is gigabytes, never held as one buffer.
                let file = scratch.join(format!("search-{}-download.snapshot", std::process::id()));
                let found = blobs
                    .get_file(key, &file)
                    .await
                    .map_err(|e| SearchError::Store(e.to_string()))?;
                if !found {
                    return Ok(None);
                }
                let loaded = tokio::task::spawn_blocking(move || {
                    let loaded = snapshot::load(&file);
                    let _ = std::fs::remove_file(&file);
                    loaded
                })
                .await
                .map_err(|e| SearchError::Internal(e.to_string()))?;
                loaded
            }
            SnapshotPlace::Nowhere => Ok(None),
        }
    }
}

/// A photo's current state: its facts and its vector, or `None` when it is
/// gone from the store.
type PhotoState = Option<(Doc, Option<Vec<f32>>)>;

/// What `GET /v1/search` answers from.
pub struct SearchIndex {
    settings: SearchSettings,
    lexicon: Lexicon,
    encoder: Option<TermEncoder>,
    /// `None` until loaded or built.
    catalogue: RwLock<Option<Catalogue>>,
    /// Changed since the last snapshot.
    dirty: AtomicBool,
    /// How the catalogue came to be: loaded from a snapshot, or built.
    origin: std::sync::Mutex<String>,
}

/// What the index holds, for `/v1/search/status` and the logs.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexStatus {
    pub ready: bool,
    pub photos: usize,
    pub vectors: usize,
    pub last_seq: u64,
    /// Bytes of the similar-photo index.
    pub memory_bytes: usize,
    /// `loaded from <where>` or `built from the metadata store`.
    pub origin: String,
}

impl SearchIndex {
    pub fn new(settings: SearchSettings, lexicon: Lexicon, encoder: Option<TermEncoder>) -> Self {
        SearchIndex {
            settings,
            lexicon,
            encoder,
            catalogue: RwLock::new(None),
            dirty: AtomicBool::new(false),
            origin: std::sync::Mutex::new(String::new()),
        }
    }

    pub fn settings(&self) -> &SearchSettings {
        &self.settings
    }

    /// Sets the catalogue outright (tests, `darkroom index rebuild`).
    pub fn install(&self, catalogue: Catalogue) {
        *self.write() = Some(catalogue);
        self.dirty.store(true, Ordering::Relaxed);
    }

    pub fn status(&self) -> IndexStatus {
        let origin = self
            .origin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let guard = self.read();
        match guard.as_ref() {
            Some(c) => IndexStatus {
                origin,
                ready: true,
                photos: c.len(),
                vectors: c.vectors().map_or(0, PhotoIndex::len),
                last_seq: c.last_seq,
                memory_bytes: c.vectors().map_or(0, |v| v.graph().memory_bytes()),
            },
            None => IndexStatus {
                origin,
                ready: false,
                photos: 0,
                vectors: 0,
                last_seq: 0,
                memory_bytes: 0,
            },
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Catalogue>> {
        self.catalogue.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<Catalogue>> {
        self.catalogue.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers a query; `vector` ranks by similarity to a photo that is not
    /// in the catalogue (`POST /v1/search/similar`); `personal` is the
    /// head `sort=aesthetic` ranks by. Blocking: CPU work under a read lock.
    pub fn search(
        &self,
        query: &Query,
        vector: Option<&[f32]>,
        personal: Option<Personal<'_>>,
    ) -> Result<(Page, Option<Reading>), SearchError> {
        let guard = self.read();
        let catalogue = guard.as_ref().ok_or(SearchError::NotReady)?;
        let (text_plan, reading) = if query.text.is_empty() {
            (None, None)
        } else {
            let (p, r) = plan(&query.text, catalogue, &self.lexicon, self.encoder.as_ref())?;
            (Some(p), Some(r))
        };
        let similar_vector = match (&query.similar_to, vector) {
            (_, Some(v)) => Some(v),
            (Some(id), None) => Some(catalogue.vector_of(id)?),
            (None, None) => None,
        };
        let similar = similar_vector.map(|v| VectorSearch {
            vector: v,
            exclude: query.similar_to.as_deref(),
            depth: self.settings.similar_depth,
            ef: self.settings.ef,
        });
        let page = catalogue.search_with(query, text_plan.as_ref(), similar, personal)?;
        Ok((page, reading))
    }

    /// Applies photos' current states (`None`: the photo is gone).
    fn apply(&self, changes: Vec<(String, PhotoState)>, last_seq: u64) {
        for chunk in changes.chunks(APPLY_CHUNK) {
            let mut guard = self.write();
            let Some(catalogue) = guard.as_mut() else {
                return;
            };
            for (id, change) in chunk {
                apply_one(catalogue, id, change.as_ref(), &self.settings.model);
            }
        }
        if let Some(c) = self.write().as_mut() {
            c.last_seq = c.last_seq.max(last_seq);
        }
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Encodes the catalogue's concept terms ahead of the first query.
    fn warm_encoder(&self) {
        if let Some(encoder) = &self.encoder {
            let guard = self.read();
            if let Some(c) = guard.as_ref() {
                if let Err(e) = encoder.warm(c) {
                    eprintln!("darkroom search: encoding the concept terms: {e}");
                }
            }
        }
    }
}

fn apply_one(
    catalogue: &mut Catalogue,
    id: &str,
    change: Option<&(Doc, Option<Vec<f32>>)>,
    model: &str,
) {
    let Some((doc, vector)) = change else {
        catalogue.remove(id);
        return;
    };
    catalogue.upsert(doc);
    match vector {
        Some(v) => {
            if let Err(e) = catalogue.upsert_vector(id, model, v) {
                eprintln!("darkroom search: photo {id}: {e}; left out of the similar-photo index");
            }
        }
        None => catalogue.remove_vector(id),
    }
}

/// A photo's current state in the store: its facts and its embedding.
async fn fetch(
    store: &MetaStore,
    id: &str,
    model: &str,
    trained: &Trained,
) -> Result<PhotoState, SearchError> {
    let store_err = |e: pipeline::StoreError| SearchError::Store(e.to_string());
    let Some(record) = store.get(id).await.map_err(store_err)? else {
        return Ok(None);
    };
    let vector = if record.analysis.is_some() {
        store
            .get_embedding(id, Some(model))
            .await
            .map_err(store_err)?
            .map(|e| e.vector.0)
    } else {
        None
    };
    let mut doc = Doc::from_record(&record);
    let feedback = store.feedback_on(id).await.map_err(store_err)?;
    doc.popular = Popularity::of(feedback.iter().map(|f| (f.signal, f.at_ms))).0 as f32;
    if record.analysis.is_some() {
        let scores = store.concept_scores_of(id).await.map_err(store_err)?;
        trained::merge(&mut doc, &scores, trained);
    }
    Ok(Some((doc, vector)))
}

/// How far a [`build`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Built {
    /// Photo records read (of the whole store).
    Photos(u64),
    /// Embeddings added to the similar-photo index.
    Vectors(u64),
}

/// Reads the whole metadata store into a new catalogue, current to `head`.
/// `progress` hears of every page.
pub async fn build(
    store: &MetaStore,
    model: &str,
    head: u64,
    progress: &(dyn Fn(Built) + Send + Sync),
) -> Result<Catalogue, SearchError> {
    let store_err = |e: pipeline::StoreError| SearchError::Store(e.to_string());
    let mut catalogue = Catalogue::new(None);
    let mut after = None;
    loop {
        let page = store
            .list(None, after, BUILD_PAGE)
            .await
            .map_err(store_err)?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for record in &page {
            catalogue.upsert(&Doc::from_record(record));
        }
        progress(Built::Photos(page.len() as u64));
    }
    let mut vectors: Option<PhotoIndex> = None;
    let mut after = 0;
    loop {
        let page = store
            .embeddings_page(model, after, BUILD_PAGE)
            .await
            .map_err(store_err)?;
        let Some(last) = page.last().map(|p| p.0) else {
            break;
        };
        after = last;
        let count = page.len() as u64;
        let mut building = vectors
            .take()
            .unwrap_or_else(|| PhotoIndex::new(model, page[0].2.dims(), Params::default()));
        building = tokio::task::spawn_blocking(move || {
            for (_, id, embedding) in &page {
                if let Err(e) = building.upsert(id, &embedding.0) {
                    eprintln!(
                        "darkroom search: photo {id}: {e}; left out of the similar-photo index"
                    );
                }
            }
            building
        })
        .await
        .map_err(|e| SearchError::Internal(e.to_string()))?;
        vectors = Some(building);
        progress(Built::Vectors(count));
    }
    catalogue.set_vectors(vectors);
    load_popularity(store, &mut catalogue).await?;
    let trained = Trained::load(store).await?;
    for name in trained.names() {
        trained::refresh(store, name, &trained, |scores| {
            catalogue.set_trained(name, scores)
        })
        .await?;
    }
    catalogue.last_seq = head;
    Ok(catalogue)
}

/// Sets every photo's popularity from the feedback store, read in photo
/// order a page at a time.
async fn load_popularity(store: &MetaStore, catalogue: &mut Catalogue) -> Result<(), SearchError> {
    let store_err = |e: pipeline::StoreError| SearchError::Store(e.to_string());
    let mut after: Option<(i64, String)> = None;
    let mut current: Option<(String, Vec<(Signal, i64)>)> = None;
    loop {
        let page = store
            .feedback_page(after.clone(), BUILD_PAGE)
            .await
            .map_err(store_err)?;
        let Some((seq, last)) = page.last() else {
            break;
        };
        after = Some((*seq, last.user.clone()));
        for (_, f) in page {
            if current.as_ref().is_some_and(|c| c.0 != f.photo_id) {
                let (id, signals) = current.take().expect("checked");
                catalogue.set_popular(&id, Popularity::of(signals).0 as f32);
            }
            current
                .get_or_insert_with(|| (f.photo_id.clone(), Vec::new()))
                .1
                .push((f.signal, f.at_ms));
        }
    }
    if let Some((id, signals)) = current {
        catalogue.set_popular(&id, Popularity::of(signals).0 as f32);
    }
    Ok(())
}

/// What a snapshot records as the log its positions belong to: the log and
/// the metadata database (`MetadataConfig::identity`).
pub fn log_identity(log: &EventLog, database: &str) -> String {
    format!("{} {database}", log.name())
}

/// Loads or builds the catalogue, then follows the event log until `stop`.
/// `database` names the metadata store (`MetadataConfig::identity`): a
/// snapshot taken against another database or log is not used.
pub async fn run(
    index: Arc<SearchIndex>,
    store: MetaStore,
    log: EventLog,
    database: String,
    place: SnapshotPlace,
    mut stop: watch::Receiver<bool>,
) {
    let log_name = log_identity(&log, &database);
    let model = index.settings.model.clone();
    // Load or build, retrying while the stores are down.
    loop {
        let started = Instant::now();
        match load_or_build(&store, &log, &place, &log_name, &model).await {
            Ok((catalogue, how)) => {
                eprintln!(
                    "darkroom search: {} photos ({} with vectors) {how} in {:.1} s",
                    catalogue.len(),
                    catalogue.vectors().map_or(0, PhotoIndex::len),
                    started.elapsed().as_secs_f64()
                );
                let built = how.starts_with("built");
                *index.origin.lock().unwrap_or_else(|p| p.into_inner()) = how;
                *index.write() = Some(catalogue);
                index.dirty.store(built, Ordering::Relaxed);
                break;
            }
            Err(e) => {
                eprintln!("darkroom search: loading the catalogue: {e}; retrying in 2 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
        if *stop.borrow() {
            return;
        }
    }
    let warm = index.clone();
    let _ = tokio::task::spawn_blocking(move || warm.warm_encoder()).await;
    // Read again whenever a concept is activated, backfilled or deleted.
    let mut trained = None;
    let poll = Duration::from_millis(index.settings.poll_ms.max(10));
    let snapshot_every = Duration::from_secs(index.settings.snapshot_every_s.max(1));
    let mut last_snapshot = Instant::now();
    let mut failing = false;
    loop {
        if *stop.borrow() {
            break;
        }
        let after = index.status().last_seq;
        match follow_round(&index, &store, &log, after, &model, &mut trained).await {
            Ok(n) => {
                if failing {
                    eprintln!("darkroom search: following the event log again");
                    failing = false;
                }
                if n > 0 {
                    continue;
                }
            }
            Err(e) => {
                if !failing {
                    eprintln!("darkroom search: following the event log: {e}; retrying");
                    failing = true;
                }
            }
        }
        if last_snapshot.elapsed() >= snapshot_every && index.dirty.load(Ordering::Relaxed) {
            save_snapshot(&index, &place, &log_name).await;
            last_snapshot = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
    if index.dirty.load(Ordering::Relaxed) {
        save_snapshot(&index, &place, &log_name).await;
    }
}

async fn load_or_build(
    store: &MetaStore,
    log: &EventLog,
    place: &SnapshotPlace,
    log_name: &str,
    model: &str,
) -> Result<(Catalogue, String), SearchError> {
    match place.load().await {
        Ok(Some((catalogue, name)))
            if name == log_name
                && catalogue.vectors().is_none_or(|v| v.model == model) =>
        {
            return Ok((catalogue, format!("loaded from {}", place.describe())));
        }
        Ok(Some((_, name))) => eprintln!(
            "darkroom search: the snapshot at {} follows {name}, not {log_name} (or another model); building anew",
            place.describe()
        ),
        Ok(None) => {}
        Err(e) => eprintln!("darkroom search: {e}; building anew"),
    }
    // The log's position first: events written during the scan are read
    // again afterwards, which is harmless.
    let head = log
        .head()
        .await
        .map_err(|e| SearchError::Store(e.to_string()))?;
    let catalogue = build(store, model, head, &|_| {}).await?;
    Ok((catalogue, "built from the metadata store".into()))
}

/// Reads the events after `after` and applies the photos they name, and
/// trained concepts' finished backfills and deletions. Returns how many
/// events were read.
async fn follow_round(
    index: &SearchIndex,
    store: &MetaStore,
    log: &EventLog,
    after: u64,
    model: &str,
    trained: &mut Option<Trained>,
) -> Result<usize, SearchError> {
    let events = log
        .read(after, FOLLOW_BATCH)
        .await
        .map_err(|e| SearchError::Store(e.to_string()))?;
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok(0);
    };
    if trained.is_none() {
        *trained = Some(Trained::load(store).await?);
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for logged in &events {
        match &logged.event.kind {
            EventKind::ConceptActivated { .. } => *trained = Some(Trained::load(store).await?),
            EventKind::ConceptBackfilled { concept, .. } => {
                let current = Trained::load(store).await?;
                let changed = trained::refresh(store, concept, &current, |scores| {
                    index
                        .write()
                        .as_mut()
                        .map_or(0, |c| c.set_trained(concept, scores))
                })
                .await?;
                eprintln!(
                    "darkroom search: {concept}'s backfilled scores changed {changed} photos"
                );
                *trained = Some(current);
            }
            EventKind::ConceptDeleted { concept } => {
                *trained = Some(Trained::load(store).await?);
                // Its photos are read again: their analyses may still name it.
                let holders = index
                    .read()
                    .as_ref()
                    .map(|c| c.concept_holders(concept))
                    .unwrap_or_default();
                ids.extend(holders.into_iter().filter(|id| seen.insert(id.clone())));
            }
            _ => {
                let id = &logged.event.photo_id;
                let kind = logged.event.kind.name();
                // A photo's own events, and feedback on it (its popularity).
                if !id.is_empty()
                    && (kind.starts_with("photo.") || kind == "feedback.given")
                    && seen.insert(id.clone())
                {
                    ids.push(id.clone());
                }
            }
        }
    }
    let trained = trained.as_ref().expect("loaded above");
    let mut changes = Vec::with_capacity(ids.len());
    for id in ids {
        let state = fetch(store, &id, model, trained).await?;
        changes.push((id, state));
    }
    index.apply(changes, last);
    Ok(events.len())
}

async fn save_snapshot(index: &Arc<SearchIndex>, place: &SnapshotPlace, log_name: &str) {
    index.dirty.store(false, Ordering::Relaxed);
    let started = Instant::now();
    match save(index, place, log_name).await {
        Ok(()) => {
            if !matches!(place, SnapshotPlace::Nowhere) {
                eprintln!(
                    "darkroom search: snapshot written to {} in {:.1} s",
                    place.describe(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Err(e) => {
            index.dirty.store(true, Ordering::Relaxed);
            eprintln!("darkroom search: writing the snapshot: {e}");
        }
    }
}

/// Writes the index's catalogue as a snapshot at `place` (a file
/// atomically; an object in one PUT).
pub async fn save(
    index: &Arc<SearchIndex>,
    place: &SnapshotPlace,
    log_name: &str,
) -> Result<(), SearchError> {
    let writer = index.clone();
    let place_for_write = place.clone();
    let log_name = log_name.to_string();
    // Embedded, the snapshot file itself; scaled out, a local file that is
    // then uploaded in parts.
    let file = tokio::task::spawn_blocking(move || -> Result<Option<PathBuf>, SearchError> {
        let guard = writer.read();
        let Some(catalogue) = guard.as_ref() else {
            return Ok(None);
        };
        let path = match &place_for_write {
            SnapshotPlace::File(path) => path.clone(),
            SnapshotPlace::Blobs { scratch, .. } => {
                scratch.join(format!("search-{}-upload.snapshot", std::process::id()))
            }
            SnapshotPlace::Nowhere => return Ok(None),
        };
        snapshot::save(catalogue, &log_name, &path)?;
        Ok(Some(path))
    })
    .await
    .map_err(|e| SearchError::Internal(e.to_string()))??;
    if let (Some(file), SnapshotPlace::Blobs { blobs, key, .. }) = (file, place) {
        let uploaded = blobs
            .put_file(key, &file)
            .await
            .map_err(|e| SearchError::Store(e.to_string()));
        let _ = tokio::fs::remove_file(&file).await;
        uploaded?;
    }
    Ok(())
}
