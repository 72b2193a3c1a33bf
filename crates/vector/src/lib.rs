//! Approximate nearest-neighbour search over photo embeddings.
//!
//! [`Hnsw`] is a hierarchical navigable small-world graph (Malkov and
//! Yashunin, 2016) over L2-normalised vectors, scored by inner product
//! (cosine similarity). Each vector gets a random top layer (geometric, mean
//! 1/ln M); a search descends greedily through the upper layers and runs a
//! best-first search of width `ef` on the bottom one. Neighbours are chosen
//! with the paper's heuristic (a candidate is kept only if it is closer to
//! the new vector than to any neighbour already kept), which keeps the graph
//! navigable on clustered data such as photo embeddings.
//!
//! Filters are applied inside the search: nodes that fail the filter are
//! still walked through, but only passing ones enter the results, and the
//! search widens until it has `k` of them or has seen the whole graph. So a
//! filtered query returns `k` results whenever `k` exist. A filter that
//! passes fewer than one node in 10 (estimated on a sample of 512) is
//! answered exactly instead, over the passing nodes: a walk through a graph
//! whose nodes it mostly may not return loses its way.
//!
//! Deleted vectors stay in the graph as waypoints and are never returned.
//! Everything is deterministic for the same insertions in the same order
//! (the layer draws come from a seeded generator). [`Hnsw::write`] and
//! [`Hnsw::read`] keep an index in a compact little-endian file.

mod file;
mod photos;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};

pub use file::FileError;
pub use photos::PhotoIndex;

/// Nodes sampled to estimate how many pass a filter.
const FILTER_SAMPLE: usize = 512;
/// A filter passing fewer than one node in this many is answered exactly.
const EXACT_BELOW: f64 = 10.0;

/// How the graph is built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Links per node on the upper layers (twice that on the bottom one).
    pub m: usize,
    /// Search width while inserting.
    pub ef_construction: usize,
    /// Seed of the layer draws.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            m: 16,
            ef_construction: 100,
            seed: 0x5EED_DA4C_0000_0001,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VectorError {
    #[error("a vector has {found} values; the index holds {expected}")]
    Dimensions { expected: usize, found: usize },
    #[error("{0}")]
    Mismatch(String),
}

/// A scored node: similarity, then node (so ties order the same way every time).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored(f32, u32);

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .total_cmp(&other.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The graph. Nodes are numbered in insertion order from 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Hnsw {
    dims: usize,
    params: Params,
    /// Every vector, one after another.
    vectors: Vec<f32>,
    /// `links[node][layer]`: the node's neighbours on each of its layers.
    links: Vec<Vec<Vec<u32>>>,
    deleted: Vec<bool>,
    live: usize,
    /// The node on the top layer where every search starts.
    entry: Option<u32>,
    rng: u64,
}

impl Hnsw {
    pub fn new(dims: usize, params: Params) -> Hnsw {
        Hnsw {
            dims,
            params,
            vectors: Vec::new(),
            links: Vec::new(),
            deleted: Vec::new(),
            live: 0,
            entry: None,
            rng: params.seed,
        }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Nodes ever inserted, deleted ones included.
    pub fn nodes(&self) -> usize {
        self.links.len()
    }

    /// Nodes not deleted.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn vector(&self, node: u32) -> &[f32] {
        let i = node as usize * self.dims;
        &self.vectors[i..i + self.dims]
    }

    pub fn is_deleted(&self, node: u32) -> bool {
        self.deleted[node as usize]
    }

    /// Bytes held: vectors, links and bookkeeping.
    pub fn memory_bytes(&self) -> usize {
        let links: usize = self
            .links
            .iter()
            .map(|layers| layers.iter().map(|l| l.capacity() * 4 + 24).sum::<usize>() + 24)
            .sum();
        self.vectors.capacity() * 4 + links + self.deleted.capacity()
    }

    fn sim(&self, a: &[f32], node: u32) -> f32 {
        dot(a, self.vector(node))
    }

    fn max_links(&self, layer: usize) -> usize {
        if layer == 0 {
            2 * self.params.m
        } else {
            self.params.m
        }
    }

    /// The layer draw, in 0..1.
    fn next_random(&mut self) -> f64 {
        let mut rng = SplitMix(self.rng);
        let u = rng.unit();
        self.rng = rng.0;
        u
    }

    /// Adds a vector (L2-normalised) and returns its node number.
    pub fn insert(&mut self, vector: &[f32]) -> Result<u32, VectorError> {
        if vector.len() != self.dims {
            return Err(VectorError::Dimensions {
                expected: self.dims,
                found: vector.len(),
            });
        }
        let node = self.links.len() as u32;
        let level_mult = 1.0 / (self.params.m.max(2) as f64).ln();
        let top = (-(1.0 - self.next_random()).ln() * level_mult).floor() as usize;
        let top = top.min(16);
        self.vectors.extend_from_slice(vector);
        self.links.push(vec![Vec::new(); top + 1]);
        self.deleted.push(false);
        self.live += 1;
        let Some(entry) = self.entry else {
            self.entry = Some(node);
            return Ok(node);
        };
        let entry_top = self.links[entry as usize].len() - 1;
        let mut nearest = Scored(self.sim(vector, entry), entry);
        for layer in (top + 1..=entry_top).rev() {
            nearest = self.greedy(vector, nearest, layer);
        }
        let mut entries = vec![nearest];
        for layer in (0..=top.min(entry_top)).rev() {
            let found = self.search_layer(vector, &entries, self.params.ef_construction, layer);
            let chosen = self.select(&found, self.max_links(layer));
            self.links[node as usize][layer] = chosen.iter().map(|s| s.1).collect();
            for s in &chosen {
                self.link_back(s.1, node, layer);
            }
            entries = found;
        }
        if top > entry_top {
            self.entry = Some(node);
        }
        Ok(node)
    }

    /// Adds `node` to `to`'s links on `layer`, pruning them with the
    /// heuristic when they overflow.
    fn link_back(&mut self, to: u32, node: u32, layer: usize) {
        let max = self.max_links(layer);
        let list = &mut self.links[to as usize][layer];
        if list.contains(&node) {
            return;
        }
        list.push(node);
        if list.len() <= max {
            return;
        }
        let base = self.vector(to).to_vec();
        let mut candidates: Vec<Scored> = self.links[to as usize][layer]
            .iter()
            .map(|&n| Scored(self.sim(&base, n), n))
            .collect();
        candidates.sort_by(|a, b| b.cmp(a));
        let kept = self.select(&candidates, max);
        self.links[to as usize][layer] = kept.iter().map(|s| s.1).collect();
    }

    /// The neighbour heuristic: from candidates best first (scored against
    /// the node being linked), keep one only if it is more similar to that
    /// node than to every one kept; then fill up with the best of those
    /// passed over.
    fn select(&self, sorted: &[Scored], max: usize) -> Vec<Scored> {
        let mut kept: Vec<Scored> = Vec::with_capacity(max);
        let mut passed = Vec::new();
        for &c in sorted {
            if kept.len() >= max {
                break;
            }
            let diverse = kept
                .iter()
                .all(|k| dot(self.vector(c.1), self.vector(k.1)) < c.0);
            if diverse {
                kept.push(c);
            } else {
                passed.push(c);
            }
        }
        for c in passed {
            if kept.len() >= max {
                break;
            }
            kept.push(c);
        }
        kept
    }

    /// Greedy descent on one layer from `from`.
    fn greedy(&self, q: &[f32], mut from: Scored, layer: usize) -> Scored {
        loop {
            let mut moved = false;
            for &n in &self.links[from.1 as usize][layer] {
                let s = Scored(self.sim(q, n), n);
                if s > from {
                    from = s;
                    moved = true;
                }
            }
            if !moved {
                return from;
            }
        }
    }

    /// Best-first search of width `ef` on `layer`: the `ef` most similar
    /// nodes reached, best first (deleted ones included: they route).
    fn search_layer(&self, q: &[f32], entries: &[Scored], ef: usize, layer: usize) -> Vec<Scored> {
        self.search_filtered(q, entries, ef, layer, &|_| true, usize::MAX)
            .0
    }

    /// The bottom-layer search with a filter: walks the graph best first,
    /// keeps the `ef` best nodes that `keep` accepts, and stops when the
    /// best unexplored node is worse than the worst kept one (with `ef`
    /// kept) or after `budget` expansions. Returns the kept nodes best
    /// first and how many nodes were expanded.
    fn search_filtered(
        &self,
        q: &[f32],
        entries: &[Scored],
        ef: usize,
        layer: usize,
        keep: &dyn Fn(u32) -> bool,
        budget: usize,
    ) -> (Vec<Scored>, usize) {
        let mut seen: HashSet<u32> = entries.iter().map(|s| s.1).collect();
        let mut frontier: BinaryHeap<Scored> = entries.iter().copied().collect();
        // The kept nodes as a min-heap (worst on top).
        let mut best: BinaryHeap<std::cmp::Reverse<Scored>> = BinaryHeap::new();
        for &e in entries {
            if keep(e.1) {
                best.push(std::cmp::Reverse(e));
            }
        }
        while best.len() > ef {
            best.pop();
        }
        let mut expanded = 0;
        while let Some(c) = frontier.pop() {
            if best.len() >= ef && best.peek().is_some_and(|w| c < w.0) {
                break;
            }
            expanded += 1;
            if expanded > budget {
                break;
            }
            for &n in &self.links[c.1 as usize][layer] {
                if !seen.insert(n) {
                    continue;
                }
                let s = Scored(self.sim(q, n), n);
                let worst = best.peek().map(|w| w.0);
                if best.len() < ef || worst.is_none_or(|w| s > w) {
                    frontier.push(s);
                    if keep(n) {
                        best.push(std::cmp::Reverse(s));
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            }
        }
        let mut out: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        (out, expanded)
    }

    /// The `k` nodes most similar to `q` (L2-normalised) that are not
    /// deleted and that `keep` accepts, best first, with their similarity.
    /// `ef` (at least `k`) trades speed for recall.
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>, VectorError> {
        if q.len() != self.dims {
            return Err(VectorError::Dimensions {
                expected: self.dims,
                found: q.len(),
            });
        }
        let Some(entry) = self.entry else {
            return Ok(Vec::new());
        };
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut nearest = Scored(self.sim(q, entry), entry);
        for layer in (1..self.links[entry as usize].len()).rev() {
            nearest = self.greedy(q, nearest, layer);
        }
        let accept = |n: u32| !self.deleted[n as usize] && keep(n);
        // A selective filter strands a graph walk among nodes it may not
        // return: below one node in EXACT_BELOW passing (estimated on a
        // fixed sample), scoring the passing nodes exactly is both cheaper
        // and right.
        let step = (self.nodes() / FILTER_SAMPLE).max(1);
        let sampled = (0..self.nodes()).step_by(step).count();
        let passing = (0..self.nodes() as u32)
            .step_by(step)
            .filter(|&n| accept(n))
            .count();
        if (passing as f64) < sampled as f64 / EXACT_BELOW {
            return Ok(self.brute_force(q, k, keep));
        }
        // Widen until k results, or the whole graph was walked.
        let mut ef = ef.max(k);
        loop {
            let (found, expanded) = self.search_filtered(q, &[nearest], ef, 0, &accept, usize::MAX);
            if found.len() >= k || expanded >= self.nodes() || ef >= self.nodes() {
                return Ok(found.into_iter().take(k).map(|s| (s.1, s.0)).collect());
            }
            ef = (ef * 4).min(self.nodes());
        }
    }

    /// Marks a node deleted: never returned again, still a waypoint.
    /// False when it was already deleted.
    pub fn delete(&mut self, node: u32) -> bool {
        let slot = &mut self.deleted[node as usize];
        if *slot {
            return false;
        }
        *slot = true;
        self.live -= 1;
        true
    }

    /// The exact answer, by scoring every node: what recall is measured against.
    pub fn brute_force(&self, q: &[f32], k: usize, keep: &dyn Fn(u32) -> bool) -> Vec<(u32, f32)> {
        let mut all: Vec<Scored> = (0..self.nodes() as u32)
            .filter(|&n| !self.deleted[n as usize] && keep(n))
            .map(|n| Scored(self.sim(q, n), n))
            .collect();
        all.sort_by(|a, b| b.cmp(a));
        all.truncate(k);
        all.into_iter().map(|s| (s.1, s.0)).collect()
    }
}

/// SplitMix64: a small, seeded generator (the layer draws; test data).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..1.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in -1..1.
    pub fn signed(&mut self) -> f32 {
        (self.unit() * 2.0 - 1.0) as f32
    }
}

/// Inner product, in eight lanes (the compiler vectorises it).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests;
