//! [`Catalogue`]: every photo's searchable facts in memory — status,
//! uploader, upload time, shape, size, quality, and its terms (concepts,
//! keywords, caption words) with an inverted index over them — beside the
//! similar-photo index. One query is answered by [`Catalogue::search`].
//!
//! A photo's terms carry a score: a concept's confidence, a caption word's
//! caption probability, 1 for a keyword a reviewer added. Terms are kept
//! lowercased; their first spelling is what results show.

use std::collections::HashMap;

use domain::photo::Status;
use vector::PhotoIndex;

pub use crate::doc::{is_stop_word, words, Doc, TermKind};
use crate::query::{Cursor, Orientation, Query, SizeClass, Sort};
use crate::SearchError;
use counts::Counts;

mod counts;
mod trained;

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

/// A user's personal aesthetic head, for `sort=aesthetic`: photos rank by
/// `sigmoid(w · embedding + b)` (their similar-photo vector).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Personal<'a> {
    pub weights: &'a [f32],
    pub bias: f32,
}

impl Personal<'_> {
    fn margin(&self, v: &[f32]) -> f64 {
        self.weights
            .iter()
            .zip(v)
            .map(|(w, x)| f64::from(*w) * f64::from(*x))
            .sum::<f64>()
            + f64::from(self.bias)
    }
}

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

    /// Answers `query`. `plan` is its text resolved by the lexicon (`None`
    /// when it has no text); `similar` the vector to rank by.
    pub fn search(
        &self,
        query: &Query,
        plan: Option<&TextPlan>,
        similar: Option<VectorSearch<'_>>,
    ) -> Result<Page, SearchError> {
        self.search_with(query, plan, similar, None)
    }

    /// [`Catalogue::search`], with the head `sort=aesthetic` ranks by.
    pub fn search_with(
        &self,
        query: &Query,
        plan: Option<&TextPlan>,
        similar: Option<VectorSearch<'_>>,
        personal: Option<Personal<'_>>,
    ) -> Result<Page, SearchError> {
        let filter = self.filter(query);
        let text = plan.map(|p| self.text_scores(p));
        let ranked = text.is_some() || similar.is_some();
        let min_score = query.min_score.unwrap_or(match (&similar, &text) {
            (Some(_), _) => DEFAULT_MIN_SIMILAR,
            (None, Some(_)) => DEFAULT_MIN_TEXT,
            (None, None) => 0.0,
        });
        // Every match, with its score.
        let mut matches: Vec<(u32, f32)> = match (&similar, &text) {
            (Some(v), _) => {
                let Some(index) = &self.vectors else {
                    return Ok(Page {
                        total: 0,
                        results: Vec::new(),
                        facets: self.facets(&Counts::default()),
                        next_cursor: None,
                    });
                };
                let keep = |node: u32| {
                    let Some(&slot) = self.node_slots.get(node as usize) else {
                        return false;
                    };
                    let Some(e) = self.slots.get(slot as usize).and_then(Option::as_ref) else {
                        return false;
                    };
                    filter.passes(e)
                        && v.exclude != Some(&*e.id)
                        && text.as_ref().is_none_or(|t| t.contains(slot))
                };
                index
                    .search_nodes(v.vector, v.depth, v.ef.max(v.depth), &keep)
                    .map_err(|e| SearchError::Internal(e.to_string()))?
                    .into_iter()
                    .map(|(node, sim)| (self.node_slots[node as usize], sim))
                    .collect()
            }
            (None, Some(scores)) => scores
                .matches
                .iter()
                .filter(|&&s| {
                    self.slots[s as usize]
                        .as_ref()
                        .is_some_and(|e| filter.passes(e))
                })
                .map(|&s| (s, scores.score[s as usize]))
                .collect(),
            (None, None) => self
                .candidates(&filter)
                .filter(|&s| {
                    self.slots[s as usize]
                        .as_ref()
                        .is_some_and(|e| filter.passes(e))
                })
                .map(|s| (s, 0.0))
                .collect(),
        };
        if ranked {
            matches.retain(|m| m.1 >= min_score);
        }
        let mut sample = None;
        let counts = if !ranked && filter.status_only() {
            let mut c = Counts::default();
            for st in &filter.statuses {
                if let Some(n) = self.counts.get(st) {
                    c.merge(n);
                }
            }
            c
        } else {
            let mut c = Counts {
                concepts: vec![0; self.terms.names.len()],
                ..Counts::default()
            };
            let stride = matches.len().div_ceil(FACET_SAMPLE).max(1);
            for &(s, _) in matches.iter().step_by(stride) {
                if let Some(e) = &self.slots[s as usize] {
                    c.add(e, 1);
                }
            }
            if stride > 1 {
                sample = Some(c.photos);
                c.scale_to(matches.len() as u64);
            }
            c
        };
        let sort = query.sort_for(ranked);
        let key = |slot: u32, score: f32| -> f64 {
            let e = self.slots[slot as usize].as_ref().expect("a live slot");
            match sort {
                Sort::Relevance => score as f64,
                Sort::Newest => e.created_ms as f64,
                Sort::Quality if e.quality.is_nan() => -1.0,
                Sort::Quality => e.quality as f64,
                // Finite, for the cursor: below any photo someone liked.
                Sort::Popular => (e.popular as f64).max(-1e30),
                Sort::Aesthetic => personal
                    .zip(self.vectors.as_ref().and_then(|v| v.vector(&e.id)))
                    .map_or(-1e30, |(p, v)| p.margin(v)),
            }
        };
        let seq_of = |slot: u32| self.slots[slot as usize].as_ref().map_or(0, |e| e.seq);
        let fingerprint = query.fingerprint(similar.is_some());
        let after = query
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(c, fingerprint))
            .transpose()?;
        // (key, seq, slot, score), the page's order: key descending, then
        // the later upload first.
        let mut keyed: Vec<(f64, i64, u32, f32)> = matches
            .iter()
            .map(|&(s, score)| (key(s, score), seq_of(s), s, score))
            .filter(|k| after.is_none_or(|c| k.0 < c.key || (k.0 == c.key && k.1 < c.seq)))
            .collect();
        let order = |a: &(f64, i64, u32, f32), b: &(f64, i64, u32, f32)| {
            b.0.total_cmp(&a.0).then(b.1.cmp(&a.1))
        };
        let want = query.limit + 1;
        if keyed.len() > want {
            keyed.select_nth_unstable_by(want - 1, order);
            keyed.truncate(want);
        }
        keyed.sort_by(order);
        let next_cursor = (keyed.len() > query.limit).then(|| {
            let last = keyed[query.limit - 1];
            Cursor {
                fingerprint,
                key: last.0,
                seq: last.1,
            }
            .encode()
        });
        keyed.truncate(query.limit);
        let results = keyed
            .iter()
            .map(|&(_, _, slot, score)| {
                let e = self.slots[slot as usize].as_ref().expect("a live slot");
                let mut concepts: Vec<(String, f32)> = e
                    .concepts()
                    .map(|t| (self.terms.names[t.0 as usize].clone(), t.1))
                    .collect();
                concepts.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                concepts.truncate(RESULT_CONCEPTS);
                let aesthetic = (sort == Sort::Aesthetic)
                    .then(|| {
                        let v = self.vectors.as_ref()?.vector(&e.id)?;
                        let z = personal?.margin(v);
                        Some((1.0 / (1.0 + (-z).exp())) as f32)
                    })
                    .flatten();
                Hit {
                    id: e.id.to_string(),
                    score: ranked.then_some(score),
                    aesthetic,
                    concepts,
                    width: e.width,
                    height: e.height,
                }
            })
            .collect();
        Ok(Page {
            total: counts.photos,
            results,
            facets: Facets {
                sample,
                ..self.facets(&counts)
            },
            next_cursor,
        })
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

    fn facets(&self, counts: &Counts) -> Facets {
        let mut concepts: Vec<(u32, u64)> = counts
            .concepts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(t, &n)| (t as u32, n))
            .collect();
        let by_count = |a: &(u32, u64), b: &(u32, u64)| {
            b.1.cmp(&a.1)
                .then_with(|| self.terms.names[a.0 as usize].cmp(&self.terms.names[b.0 as usize]))
        };
        if concepts.len() > FACET_CONCEPTS {
            concepts.select_nth_unstable_by(FACET_CONCEPTS - 1, by_count);
            concepts.truncate(FACET_CONCEPTS);
        }
        concepts.sort_by(by_count);
        Facets {
            concepts: concepts
                .into_iter()
                .map(|(t, n)| (self.terms.names[t as usize].clone(), n))
                .collect(),
            orientation: Orientation::ALL
                .iter()
                .zip(counts.orientation)
                .map(|(o, n)| (o.as_str(), n))
                .collect(),
            size: SizeClass::ALL
                .iter()
                .zip(counts.size)
                .map(|(s, n)| (s.as_str(), n))
                .collect(),
            sample: None,
        }
    }

    /// Per matching slot, the mean over the plan's units of the unit's best
    /// `weight × term score`; a slot must match every unit. Dense arrays
    /// over the slots, not maps: a broad word ("animal") matches half the
    /// catalogue, and a hash map per query costs several times more.
    fn text_scores(&self, plan: &TextPlan) -> TextScores {
        let n = self.slots.len();
        let units = plan.len();
        let mut sum = vec![0f32; n];
        let mut count = vec![0u16; n];
        let mut best = vec![f32::NAN; n];
        let mut touched: Vec<u32> = Vec::new();
        for (i, unit) in plan.iter().enumerate() {
            touched.clear();
            for &(term, weight) in unit {
                for &(slot, term_score) in &self.postings[term as usize] {
                    // Later units only narrow the earlier ones' matches.
                    if count[slot as usize] as usize != i {
                        continue;
                    }
                    let score = weight * term_score;
                    let b = &mut best[slot as usize];
                    if b.is_nan() {
                        touched.push(slot);
                        *b = score;
                    } else if score > *b {
                        *b = score;
                    }
                }
            }
            for &slot in &touched {
                let s = slot as usize;
                sum[s] += best[s];
                count[s] += 1;
                best[s] = f32::NAN;
            }
        }
        // The last unit's matches matched every unit before it.
        let matches = if units == 0 { Vec::new() } else { touched };
        for &slot in &matches {
            sum[slot as usize] /= units as f32;
        }
        TextScores {
            score: sum,
            count,
            units,
            matches,
        }
    }

    /// The slots worth checking: those of the rarest required concept, or all.
    fn candidates<'a>(&'a self, filter: &Filter) -> Box<dyn Iterator<Item = u32> + 'a> {
        match filter
            .concepts
            .iter()
            .min_by_key(|t| self.postings[**t as usize].len())
        {
            Some(&t) => Box::new(self.postings[t as usize].iter().map(|p| p.0)),
            None => Box::new(0..self.slots.len() as u32),
        }
    }

    fn filter(&self, q: &Query) -> Filter {
        let missing = |name: &str| self.terms.get(name).is_none();
        let unknown_uploader = q
            .uploader
            .as_deref()
            .is_some_and(|u| self.uploaders.get(&u.to_lowercase()).is_none());
        Filter {
            statuses: if q.statuses.is_empty() {
                vec![Status::Published]
            } else {
                q.statuses.clone()
            },
            concepts: q
                .concepts
                .iter()
                .filter_map(|c| self.terms.get(c))
                .collect(),
            orientations: q.orientations.clone(),
            sizes: q.sizes.clone(),
            uploader: q
                .uploader
                .as_deref()
                .and_then(|u| self.uploaders.get(&u.to_lowercase())),
            from_ms: q.from_ms,
            to_ms: q.to_ms,
            none: q.concepts.iter().any(|c| missing(c)) || unknown_uploader,
        }
    }
}

/// What a text plan matched: dense over the slots.
struct TextScores {
    /// The mean score, for the matches.
    score: Vec<f32>,
    /// Units matched, per slot.
    count: Vec<u16>,
    units: usize,
    matches: Vec<u32>,
}

impl TextScores {
    fn contains(&self, slot: u32) -> bool {
        self.units > 0 && self.count[slot as usize] as usize == self.units
    }
}

/// A query's conditions on a photo's facts.
struct Filter {
    statuses: Vec<Status>,
    concepts: Vec<u32>,
    orientations: Vec<Orientation>,
    sizes: Vec<SizeClass>,
    uploader: Option<u32>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    /// A required concept or uploader no photo has: nothing matches.
    none: bool,
}

impl Filter {
    fn passes(&self, e: &Entry) -> bool {
        !self.none
            && self.statuses.contains(&e.status)
            && (self.orientations.is_empty() || self.orientations.contains(&e.orientation()))
            && (self.sizes.is_empty() || self.sizes.contains(&e.size()))
            && self.uploader.is_none_or(|u| u == e.uploader)
            && self.from_ms.is_none_or(|t| e.created_ms >= t)
            && self.to_ms.is_none_or(|t| e.created_ms < t)
            && self.concepts.iter().all(|&t| e.score_of(t).is_some())
    }

    /// No condition beyond the status: the kept counts answer the facets.
    fn status_only(&self) -> bool {
        !self.none
            && self.concepts.is_empty()
            && self.orientations.is_empty()
            && self.sizes.is_empty()
            && self.uploader.is_none()
            && self.from_ms.is_none()
            && self.to_ms.is_none()
    }
}

#[cfg(test)]
mod tests;
