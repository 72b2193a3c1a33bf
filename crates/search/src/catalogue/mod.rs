//! [`Catalogue`]: every photo's searchable facts in memory — status,
//! uploader, upload time, shape, size, quality, and its terms (concepts,
//! keywords, caption words) with an inverted index over them — beside the
//! similar-photo index. One query is answered by [`Catalogue::search`]
//! (`search.rs`).
//!
//! A photo's terms carry a score: a concept's confidence, a caption word's
//! caption probability, 1 for a keyword a reviewer added. Terms are kept
//! lowercased; their first spelling is what results show.

use std::collections::HashMap;

use domain::photo::Status;
use vector::PhotoIndex;

pub use crate::doc::{is_stop_word, words, Doc, TermKind};
use crate::query::{Orientation, SizeClass};
use crate::SearchError;
use counts::Counts;

mod counts;
mod search;
mod trained;

pub use search::Personal;

/// Concepts listed per result.
pub const RESULT_CONCEPTS: usize = 10;
/// Concepts listed in the facets.
pub const FACET_CONCEPTS: usize = 20;
/// Past this many matches, facets are counted over an even sample of them
/// (every k-th match) and scaled up to the total, which stays exact: a
/// facet holding a share p of a query's matches is then off by about
/// sqrt(p(1-p)/20,000) of the total, at most 0.35 %. How search engines
/// count facets over very broad queries (Lucene's sampling facets).
pub const FACET_SAMPLE: usize = 20_000;
/// The default `minScore` of a text query: a photo whose best matching
/// concept scores under this is left out.
pub const DEFAULT_MIN_TEXT: f32 = 0.15;
/// The default `minScore` of a similar-photo query: cosine similarity of
/// the embeddings. Measured on the sample photos: a cat against 17
/// unrelated photos 0.06 to 0.18; two daisy close-ups 0.70.
pub const DEFAULT_MIN_SIMILAR: f32 = 0.3;

/// Strings numbered in first-seen order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Dict {
    pub(crate) ids: HashMap<String, u32>,
    /// The first spelling seen, by id.
    pub(crate) names: Vec<String>,
}

impl Dict {
    fn intern(&mut self, name: &str) -> u32 {
        let key = name.to_lowercase();
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(key, id);
        self.names.push(name.to_string());
        id
    }

    pub(crate) fn get(&self, key: &str) -> Option<u32> {
        self.ids.get(key).copied()
    }
}

/// One photo, interned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) id: Box<str>,
    pub(crate) seq: i64,
    pub(crate) created_ms: i64,
    pub(crate) status: Status,
    /// `NO_UPLOADER` when none.
    pub(crate) uploader: u32,
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// NaN when unknown.
    pub(crate) quality: f32,
    /// See [`Doc::popular`].
    pub(crate) popular: f32,
    /// Sorted by term id.
    pub(crate) terms: Box<[(u32, f32, TermKind)]>,
}

pub(crate) const NO_UPLOADER: u32 = u32::MAX;

impl Entry {
    fn score_of(&self, term: u32) -> Option<f32> {
        self.terms
            .binary_search_by_key(&term, |t| t.0)
            .ok()
            .map(|i| self.terms[i].1)
    }

    fn orientation(&self) -> Orientation {
        Orientation::of(self.width, self.height)
    }

    fn size(&self) -> SizeClass {
        SizeClass::of(self.width, self.height)
    }

    fn concepts(&self) -> impl Iterator<Item = &(u32, f32, TermKind)> {
        self.terms.iter().filter(|t| t.2 == TermKind::Concept)
    }
}

/// What a query found, before it is turned into JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub total: u64,
    pub results: Vec<Hit>,
    pub facets: Facets,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    /// `None` for a listing (no text, no similar photo).
    pub score: Option<f32>,
    /// With `sort=aesthetic`: the user's personal score, 0..1 (`None` for a
    /// photo with no embedding).
    pub aesthetic: Option<f32>,
    /// The photo's concepts, best first (at most [`RESULT_CONCEPTS`]).
    pub concepts: Vec<(String, f32)>,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facets {
    /// `[concept, photos]`, most photos first (at most [`FACET_CONCEPTS`]).
    pub concepts: Vec<(String, u64)>,
    pub orientation: Vec<(&'static str, u64)>,
    pub size: Vec<(&'static str, u64)>,
    /// The matches the counts were taken from, when they are estimated
    /// from a sample (more than [`FACET_SAMPLE`] matches); `None` when exact.
    pub sample: Option<u64>,
}

/// A text query resolved against the catalogue's terms: every unit must
/// match; a unit matches through any of its `(term, weight)` expansions.
pub type TextPlan = Vec<Vec<(u32, f32)>>;

/// How a similar-photo query runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorSearch<'a> {
    pub vector: &'a [f32],
    /// Leave this photo out (the one the query is about).
    pub exclude: Option<&'a str>,
    /// Results ranked per query, at most (the depth the cursor can page through).
    pub depth: usize,
    /// The HNSW search width.
    pub ef: usize,
}

/// Every photo's searchable facts, and the similar-photo index.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub(crate) slots: Vec<Option<Entry>>,
    pub(crate) by_id: HashMap<Box<str>, u32>,
    pub(crate) terms: Dict,
    pub(crate) uploaders: Dict,
    /// Term id → `(slot, score)` of the photos holding it, by slot: the
    /// score travels with the posting, so text scoring reads the lists in
    /// order and never the photos' own records.
    pub(crate) postings: Vec<Vec<(u32, f32)>>,
    /// A word → the multi-word terms it is part of.
    pub(crate) words: HashMap<String, Vec<u32>>,
    /// By term id: some photo has it as a concept.
    pub(crate) is_concept: Vec<bool>,
    /// Counts per status, kept as photos come and go: the facets of a
    /// query with no condition but its status.
    pub(crate) counts: HashMap<Status, Counts>,
    pub(crate) vectors: Option<PhotoIndex>,
    /// HNSW node → slot (`u32::MAX`: none), so a filter inside the vector
    /// search costs an array read per node.
    node_slots: Vec<u32>,
    /// The event log position the catalogue is current to.
    pub last_seq: u64,
}

impl Catalogue {
    pub fn new(vectors: Option<PhotoIndex>) -> Catalogue {
        Catalogue {
            slots: Vec::new(),
            by_id: HashMap::new(),
            terms: Dict::default(),
            uploaders: Dict::default(),
            postings: Vec::new(),
            words: HashMap::new(),
            is_concept: Vec::new(),
            counts: HashMap::new(),
            vectors: None,
            node_slots: Vec::new(),
            last_seq: 0,
        }
        .with_vectors(vectors)
    }

    fn with_vectors(mut self, vectors: Option<PhotoIndex>) -> Catalogue {
        self.set_vectors(vectors);
        self
    }

    /// Photos in the catalogue.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn vectors(&self) -> Option<&PhotoIndex> {
        self.vectors.as_ref()
    }

    /// Replaces the similar-photo index (built elsewhere, or read back).
    pub fn set_vectors(&mut self, vectors: Option<PhotoIndex>) {
        self.node_slots.clear();
        if let Some(index) = &vectors {
            self.node_slots = (0..index.graph().nodes() as u32)
                .map(|n| {
                    let live = !index.graph().is_deleted(n);
                    let slot = self.by_id.get(index.id_of(n)).copied();
                    slot.filter(|_| live).unwrap_or(u32::MAX)
                })
                .collect();
        }
        self.vectors = vectors;
    }

    /// Adds or replaces a photo's vector (the photo must be in already).
    pub fn upsert_vector(
        &mut self,
        id: &str,
        model: &str,
        vector: &[f32],
    ) -> Result<(), vector::VectorError> {
        let index = self
            .vectors
            .get_or_insert_with(|| PhotoIndex::new(model, vector.len(), vector::Params::default()));
        index.upsert(id, vector)?;
        if let (Some(node), Some(&slot)) = (index.node_of(id), self.by_id.get(id)) {
            let node = node as usize;
            if self.node_slots.len() <= node {
                self.node_slots.resize(node + 1, u32::MAX);
            }
            self.node_slots[node] = slot;
        }
        Ok(())
    }

    /// Takes a photo's vector out (the photo stays).
    pub fn remove_vector(&mut self, id: &str) {
        if let Some(index) = self.vectors.as_mut() {
            index.remove(id);
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The spelling of every concept term, with its id.
    pub fn term_id(&self, key: &str) -> Option<u32> {
        self.terms.get(key)
    }

    pub fn term_name(&self, id: u32) -> &str {
        &self.terms.names[id as usize]
    }

    /// How many photos hold a term.
    pub fn term_photos(&self, id: u32) -> usize {
        self.postings.get(id as usize).map_or(0, Vec::len)
    }

    /// Terms (ids) that contain `word` as one of their words.
    pub fn terms_with_word(&self, word: &str) -> &[u32] {
        self.words.get(word).map_or(&[], Vec::as_slice)
    }

    /// Concept terms some photo holds now, with their ids.
    pub fn concept_terms(&self) -> impl Iterator<Item = (u32, &str)> {
        self.terms
            .names
            .iter()
            .enumerate()
            .filter(|(t, _)| self.is_concept[*t] && !self.postings[*t].is_empty())
            .map(|(t, n)| (t as u32, n.as_str()))
    }

    /// Every term with how many photos hold it.
    pub fn term_counts(&self) -> impl Iterator<Item = (&str, usize)> {
        self.terms
            .names
            .iter()
            .zip(&self.postings)
            .map(|(n, p)| (n.as_str(), p.len()))
    }

    /// Adds or replaces a photo's facts (its vector is kept separately).
    pub fn upsert(&mut self, doc: &Doc) {
        let mut terms: Vec<(u32, f32, TermKind)> = doc
            .terms
            .iter()
            .map(|(name, score, kind)| (self.intern_term(name), *score, *kind))
            .collect();
        terms.sort_by_key(|t| t.0);
        terms.dedup_by_key(|t| t.0);
        for t in &terms {
            if t.2 == TermKind::Concept {
                self.is_concept[t.0 as usize] = true;
            }
        }
        let entry = Entry {
            id: doc.id.as_str().into(),
            seq: doc.seq,
            created_ms: doc.created_ms,
            status: doc.status,
            uploader: doc
                .uploader
                .as_deref()
                .map_or(NO_UPLOADER, |u| self.uploaders.intern(u)),
            width: doc.width,
            height: doc.height,
            quality: doc.quality.unwrap_or(f32::NAN),
            popular: doc.popular,
            terms: terms.into(),
        };
        let slot = match self.by_id.get(doc.id.as_str()) {
            Some(&slot) => {
                let old = self.slots[slot as usize].take().expect("a live slot");
                if old == entry {
                    self.slots[slot as usize] = Some(old);
                    return;
                }
                self.unlink(slot, &old);
                slot
            }
            None => {
                let slot = self.slots.len() as u32;
                self.slots.push(None);
                self.by_id.insert(doc.id.as_str().into(), slot);
                slot
            }
        };
        for t in entry.terms.iter() {
            let list = &mut self.postings[t.0 as usize];
            match list.last() {
                Some(&(last, _)) if last >= slot => {
                    match list.binary_search_by_key(&slot, |p| p.0) {
                        Ok(at) => list[at].1 = t.1,
                        Err(at) => list.insert(at, (slot, t.1)),
                    }
                }
                _ => list.push((slot, t.1)),
            }
        }
        self.counts.entry(entry.status).or_default().add(&entry, 1);
        self.slots[slot as usize] = Some(entry);
    }

    /// Sets a photo's popularity ([`Doc::popular`]); false when it is not in.
    pub fn set_popular(&mut self, id: &str, popular: f32) -> bool {
        let Some(&slot) = self.by_id.get(id) else {
            return false;
        };
        match self.slots[slot as usize].as_mut() {
            Some(e) => {
                e.popular = popular;
                true
            }
            None => false,
        }
    }

    /// Takes a photo out (its vector too); false when it was not in.
    pub fn remove(&mut self, id: &str) -> bool {
        if let Some(v) = self.vectors.as_mut() {
            v.remove(id);
        }
        let Some(slot) = self.by_id.remove(id) else {
            return false;
        };
        if let Some(old) = self.slots[slot as usize].take() {
            self.unlink(slot, &old);
        }
        true
    }

    fn unlink(&mut self, slot: u32, old: &Entry) {
        for t in old.terms.iter() {
            let list = &mut self.postings[t.0 as usize];
            if let Ok(at) = list.binary_search_by_key(&slot, |p| p.0) {
                list.remove(at);
            }
        }
        if let Some(c) = self.counts.get_mut(&old.status) {
            c.add(old, -1);
        }
    }

    fn intern_term(&mut self, name: &str) -> u32 {
        let id = self.terms.intern(name);
        if self.postings.len() <= id as usize {
            self.postings.resize_with(id as usize + 1, Vec::new);
            self.is_concept.resize(id as usize + 1, false);
            let parts = words(name);
            if parts.len() > 1 {
                for w in parts {
                    let list = self.words.entry(w).or_default();
                    if !list.contains(&id) {
                        list.push(id);
                    }
                }
            }
        }
        id
    }

    fn entry(&self, id: &str) -> Option<&Entry> {
        self.by_id
            .get(id)
            .and_then(|&s| self.slots[s as usize].as_ref())
    }

    /// The stored vector of a photo, for `similarTo`.
    pub fn vector_of(&self, id: &str) -> Result<&[f32], SearchError> {
        if let Some(v) = self.vectors.as_ref().and_then(|v| v.vector(id)) {
            return Ok(v);
        }
        Err(match self.entry(id) {
            Some(_) => SearchError::NotIndexed { id: id.to_string() },
            None => SearchError::PhotoNotFound { id: id.to_string() },
        })
    }
}

#[cfg(test)]
mod tests;
