//! A text encoder behind the search: a query phrase that is no known word
//! is embedded, and matched to the catalogue's concept terms by cosine
//! similarity of their embeddings (each term's computed once and cached).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::catalogue::Catalogue;
use crate::SearchError;

/// Turns text into L2-normalised vectors (MiniLM sentence embeddings, run
/// by the engine).
pub trait TextEncoder: Send + Sync {
    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String>;
}

/// Terms kept per phrase, at most.
pub const NEAREST_TERMS: usize = 5;
/// A term less similar than this to the phrase is no match.
pub const NEAREST_FLOOR: f32 = 0.45;
/// Terms within this of the best one are kept.
pub const NEAREST_SPREAD: f32 = 0.1;

/// The encoder and the embeddings of the terms it has seen.
pub struct TermEncoder {
    encoder: Arc<dyn TextEncoder>,
    cache: RwLock<HashMap<String, Vec<f32>>>,
}

impl std::fmt::Debug for TermEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.cache.read().map_or(0, |c| c.len());
        write!(f, "TermEncoder {{ {cached} terms cached }}")
    }
}

impl TermEncoder {
    pub fn new(encoder: Arc<dyn TextEncoder>) -> TermEncoder {
        TermEncoder {
            encoder,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Embeds every concept term of the catalogue not seen yet (64 at a
    /// time). Done after loading, so the first query does not wait for it.
    pub fn warm(&self, catalogue: &Catalogue) -> Result<usize, SearchError> {
        let missing: Vec<String> = {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            catalogue
                .concept_terms()
                .map(|(_, name)| name.to_lowercase())
                .filter(|n| !cache.contains_key(n))
                .collect()
        };
        for chunk in missing.chunks(64) {
            let vectors = self.encoder.encode(chunk).map_err(SearchError::Encoder)?;
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            for (name, v) in chunk.iter().zip(vectors) {
                cache.insert(name.clone(), v);
            }
        }
        Ok(missing.len())
    }

    /// The concept terms nearest to `phrase`, weighted by similarity
    /// relative to the best (which gets 1).
    pub fn nearest(
        &self,
        phrase: &str,
        catalogue: &Catalogue,
    ) -> Result<Vec<(u32, f32)>, SearchError> {
        self.warm(catalogue)?;
        let q = self
            .encoder
            .encode(&[phrase.to_string()])
            .map_err(SearchError::Encoder)?
            .pop()
            .unwrap_or_default();
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let mut scored: Vec<(u32, f32)> = catalogue
            .concept_terms()
            .filter_map(|(t, name)| {
                let v = cache.get(&name.to_lowercase())?;
                Some((t, vector::dot(&q, v)))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let Some(&(_, best)) = scored.first() else {
            return Ok(Vec::new());
        };
        if best < NEAREST_FLOOR {
            return Ok(Vec::new());
        }
        Ok(scored
            .into_iter()
            .take(NEAREST_TERMS)
            .filter(|s| s.1 >= NEAREST_FLOOR && s.1 >= best - NEAREST_SPREAD)
            .map(|(t, s)| (t, s / best))
            .collect())
    }
}
