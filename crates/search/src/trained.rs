//! Trained concepts' backfilled scores, taken into the catalogue.
//!
//! A photo analysed after a concept was activated carries it in its
//! analysis. Photos stored before get their score when the activation's
//! backfill runs over the stored embeddings (`concept_scores`, not the
//! photo's record). Search takes those in too: a photo holds a trained
//! concept when the active version scored it at or above that version's
//! threshold, as the analysis would have.
//!
//! - When a backfill finishes (`concept.backfilled`), every score of that
//!   concept is read in upload order and applied in bulk.
//! - A photo read again for an event of its own gets its scores merged
//!   into the facts from its record ([`merge`]), so nothing is lost.
//! - A build from the store applies every active concept's scores.
//!
//! The active version's score is the truth: it replaces the analysis's
//! score of the same concept, and a score under the threshold takes the
//! concept away. A keyword the review kept stays whatever the score.

use std::collections::HashMap;

use pipeline::MetaStore;

use crate::catalogue::{Doc, TermKind};
use crate::SearchError;

/// Scores read per round.
const PAGE: usize = 5_000;

fn store_err(e: pipeline::StoreError) -> SearchError {
    SearchError::Store(e.to_string())
}

/// The active version and threshold of every trained concept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trained(HashMap<String, (u32, f32)>);

impl Trained {
    pub async fn load(store: &MetaStore) -> Result<Trained, SearchError> {
        let mut active = HashMap::new();
        for (name, version, _) in store.active_concepts().await.map_err(store_err)? {
            if let Some(head) = store
                .concept_head(&name, version)
                .await
                .map_err(store_err)?
            {
                active.insert(name, (version, head.threshold));
            }
        }
        Ok(Trained(active))
    }

    /// From `(name, (active version, threshold))` pairs.
    pub fn from_active(active: impl IntoIterator<Item = (String, (u32, f32))>) -> Trained {
        Trained(active.into_iter().collect())
    }

    /// What a backfilled `score` of `version` means for search: the score
    /// when it reaches the threshold, `None` when it does not, and nothing
    /// at all (the outer `None`) when that version is not the active one.
    fn verdict(&self, name: &str, version: u32, score: f32) -> Option<Option<f32>> {
        let &(active, threshold) = self.0.get(name)?;
        (active == version).then_some((score >= threshold).then_some(score))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// A term's next state given a backfilled verdict: the rule of the module
/// documentation, shared by the bulk path and the per-photo one.
pub(crate) fn next_term(
    current: Option<(f32, TermKind)>,
    score: Option<f32>,
) -> Option<(f32, TermKind)> {
    match (current, score) {
        (Some((s, TermKind::Keyword)), _) => Some((s, TermKind::Keyword)),
        (_, Some(score)) => Some((score, TermKind::Concept)),
        (Some((_, TermKind::Concept)), None) => None,
        (other, None) => other,
    }
}

/// Merges a photo's backfilled scores (`concept_scores_of`) into its facts.
pub fn merge(doc: &mut Doc, scores: &[(String, u32, f32)], trained: &Trained) {
    for (name, version, score) in scores {
        let Some(verdict) = trained.verdict(name, *version, *score) else {
            continue;
        };
        let key = name.to_lowercase();
        let at = doc.terms.iter().position(|t| t.0.to_lowercase() == key);
        let current = at.map(|i| (doc.terms[i].1, doc.terms[i].2));
        match (at, next_term(current, verdict)) {
            (Some(i), Some((s, k))) => doc.terms[i] = (doc.terms[i].0.clone(), s, k),
            (Some(i), None) => {
                doc.terms.remove(i);
            }
            (None, Some((s, k))) => doc.terms.push((name.clone(), s, k)),
            (None, None) => {}
        }
    }
}

/// Reads every backfilled score of `name` and hands those of the active
/// version to `apply`, a page at a time (`(photo id, verdict)`: the score,
/// or `None` under the threshold), which applies them to a catalogue with
/// [`crate::Catalogue::set_trained`] and says how many photos changed. Returns
/// the photos changed.
pub async fn refresh(
    store: &MetaStore,
    name: &str,
    trained: &Trained,
    mut apply: impl FnMut(&[(String, Option<f32>)]) -> usize,
) -> Result<usize, SearchError> {
    let mut after = 0;
    let mut changed = 0;
    loop {
        let page = store
            .concept_scores_page(name, after, PAGE)
            .await
            .map_err(store_err)?;
        let Some(last) = page.last().map(|r| r.0) else {
            break;
        };
        after = last;
        let scores: Vec<(String, Option<f32>)> = page
            .into_iter()
            .filter_map(|(_, id, version, score)| {
                trained.verdict(name, version, score).map(|v| (id, v))
            })
            .collect();
        changed += apply(&scores);
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_active_version_decides_and_kept_keywords_stay() {
        let c = TermKind::Concept;
        assert_eq!(next_term(None, Some(0.8)), Some((0.8, c)));
        assert_eq!(next_term(Some((0.9, c)), Some(0.6)), Some((0.6, c)));
        assert_eq!(next_term(Some((0.9, c)), None), None);
        assert_eq!(
            next_term(Some((0.4, TermKind::Caption)), Some(0.7)),
            Some((0.7, c))
        );
        assert_eq!(
            next_term(Some((0.4, TermKind::Caption)), None),
            Some((0.4, TermKind::Caption))
        );
        let kept = Some((1.0, TermKind::Keyword));
        assert_eq!(next_term(kept, None), kept);
        assert_eq!(next_term(kept, Some(0.3)), kept);

        let trained = Trained(HashMap::from([("Sunset".to_string(), (2, 0.5))]));
        let mut doc = Doc {
            id: "p".into(),
            seq: 1,
            created_ms: 0,
            status: domain::photo::Status::Published,
            uploader: None,
            width: 1,
            height: 1,
            quality: None,
            popular: f32::NEG_INFINITY,
            terms: vec![("sunset".into(), 0.9, c), ("sky".into(), 0.8, c)],
        };
        // An old version's score is not the truth any more.
        merge(&mut doc, &[("Sunset".into(), 1, 0.1)], &trained);
        assert_eq!(doc.terms.len(), 2);
        // The active one's, under the threshold, takes the concept away.
        merge(&mut doc, &[("Sunset".into(), 2, 0.3)], &trained);
        assert_eq!(doc.terms, vec![("sky".to_string(), 0.8, c)]);
        merge(&mut doc, &[("Sunset".into(), 2, 0.7)], &trained);
        assert_eq!(doc.terms[1], ("Sunset".to_string(), 0.7, c));
    }
}
