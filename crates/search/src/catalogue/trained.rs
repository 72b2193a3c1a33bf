//! [`Catalogue::set_trained`]: one trained concept's scores applied to many
//! photos at once (a finished backfill), its posting list rebuilt once
//! rather than edited per photo.

use super::{Catalogue, TermKind};
use crate::trained::next_term;

impl Catalogue {
    /// Applies backfilled verdicts of the concept `name` (`(photo id,
    /// score or None under the threshold)`; photos not in the catalogue
    /// are skipped) by the rule of [`crate::trained`]. Returns the photos
    /// changed.
    pub fn set_trained(&mut self, name: &str, verdicts: &[(String, Option<f32>)]) -> usize {
        let term = self.intern_term(name);
        let t = term as usize;
        // (slot, its posting after the change)
        let mut changed: Vec<(u32, Option<f32>)> = Vec::new();
        for (id, verdict) in verdicts {
            let Some(&slot) = self.by_id.get(id.as_str()) else {
                continue;
            };
            let Some(e) = self.slots[slot as usize].as_mut() else {
                continue;
            };
            let at = e.terms.binary_search_by_key(&term, |x| x.0);
            let current = at.ok().map(|i| (e.terms[i].1, e.terms[i].2));
            let next = next_term(current, *verdict);
            if next == current {
                continue;
            }
            let mut terms = e.terms.to_vec();
            match (at, next) {
                (Ok(i), Some((s, k))) => terms[i] = (term, s, k),
                (Ok(i), None) => {
                    terms.remove(i);
                }
                (Err(i), Some((s, k))) => terms.insert(i, (term, s, k)),
                (Err(_), None) => {}
            }
            e.terms = terms.into();
            let was = current.is_some_and(|c| c.1 == TermKind::Concept);
            let now = next.is_some_and(|n| n.1 == TermKind::Concept);
            if was != now {
                self.counts
                    .entry(e.status)
                    .or_default()
                    .bump_concept(term, if now { 1 } else { -1 });
            }
            if now {
                self.is_concept[t] = true;
            }
            changed.push((slot, next.map(|n| n.0)));
        }
        if changed.is_empty() {
            return 0;
        }
        // The last verdict for a slot wins.
        changed.reverse();
        changed.sort_by_key(|c| c.0);
        changed.dedup_by_key(|c| c.0);
        let old = std::mem::take(&mut self.postings[t]);
        let mut merged = Vec::with_capacity(old.len() + changed.len());
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < changed.len() {
            let a = old.get(i).map_or(u32::MAX, |p| p.0);
            let b = changed.get(j).map_or(u32::MAX, |c| c.0);
            if a < b {
                merged.push(old[i]);
                i += 1;
            } else {
                if let Some(score) = changed[j].1 {
                    merged.push((b, score));
                }
                j += 1;
                i += usize::from(a == b);
            }
        }
        self.postings[t] = merged;
        changed.len()
    }

    /// The photos holding `name` as a concept.
    pub fn concept_holders(&self, name: &str) -> Vec<String> {
        let Some(term) = self.terms.get(name) else {
            return Vec::new();
        };
        self.postings[term as usize]
            .iter()
            .filter_map(|&(slot, _)| self.slots[slot as usize].as_ref())
            .filter(|e| {
                e.terms
                    .binary_search_by_key(&term, |t| t.0)
                    .is_ok_and(|i| e.terms[i].2 == TermKind::Concept)
            })
            .map(|e| e.id.to_string())
            .collect()
    }
}
