//! The head registry: the set of heads in force, replaced whole and
//! atomically while serving.
//!
//! A request takes a snapshot (an `Arc` of the set) when its options are
//! resolved and keeps it to the end, so a head added, replaced or removed
//! meanwhile never shows up half-way through a request, and every photo of
//! one request is finished by the same heads.

use std::sync::{Arc, RwLock};

use models::heads::{Head, LinearConceptHead};

/// An immutable, ordered set of heads with unique names.
#[derive(Clone, Default)]
pub struct HeadSet {
    heads: Vec<Arc<dyn Head>>,
    /// Bumped by every change, to tell snapshots apart.
    generation: u64,
}

impl HeadSet {
    pub fn heads(&self) -> &[Arc<dyn Head>] {
        &self.heads
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Head>> {
        self.heads.iter().find(|h| h.name() == name)
    }

    /// `(name, kind, model)` of every head, in the order they apply.
    pub fn describe(&self) -> Vec<(String, &'static str, String)> {
        self.heads
            .iter()
            .map(|h| (h.name().to_string(), h.kind(), h.model().to_string()))
            .collect()
    }
}

/// Changes to a head set, applied together by [`HeadRegistry::update`].
pub struct HeadChanges<'a> {
    heads: &'a mut Vec<Arc<dyn Head>>,
}

impl HeadChanges<'_> {
    /// Adds `head`, or replaces the head of the same name in its place.
    pub fn install(&mut self, head: Arc<dyn Head>) {
        match self.heads.iter().position(|h| h.name() == head.name()) {
            Some(i) => self.heads[i] = head,
            None => self.heads.push(head),
        }
    }

    /// Removes the head called `name`; false if there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.heads.len();
        self.heads.retain(|h| h.name() != name);
        self.heads.len() != before
    }

    /// Removes every head `keep` says no to.
    pub fn retain(&mut self, keep: impl FnMut(&Arc<dyn Head>) -> bool) {
        self.heads.retain(keep);
    }
}

/// The heads in force. Readers take a snapshot; writers build a new set
/// and swap it in.
pub struct HeadRegistry {
    /// Held for a pointer copy by readers, and by writers for the swap.
    current: RwLock<Arc<HeadSet>>,
}

impl HeadRegistry {
    pub fn new(heads: Vec<Arc<dyn Head>>) -> HeadRegistry {
        let mut set = Vec::new();
        let mut changes = HeadChanges { heads: &mut set };
        for head in heads {
            changes.install(head);
        }
        HeadRegistry {
            current: RwLock::new(Arc::new(HeadSet {
                heads: set,
                generation: 0,
            })),
        }
    }

    /// The set in force now; it never changes under the caller.
    pub fn snapshot(&self) -> Arc<HeadSet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `change` to a copy of the current set and puts the copy in
    /// force, all at once. Returns what `change` returned.
    pub fn update<T>(&self, change: impl FnOnce(&mut HeadChanges<'_>) -> T) -> T {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let mut heads = current.heads.clone();
        let out = change(&mut HeadChanges { heads: &mut heads });
        *current = Arc::new(HeadSet {
            heads,
            generation: current.generation + 1,
        });
        out
    }
}

impl HeadRegistry {
    /// Whether a built-in head (anything but a trained concept) reports
    /// `concept`: a trained concept may not take that name.
    pub fn is_builtin_concept(&self, concept: &str) -> bool {
        self.snapshot()
            .heads()
            .iter()
            .any(|h| h.kind() != TRAINED && h.reports_concept(concept))
    }

    /// The built-in keywords' thresholds (the stock vocabulary): their
    /// accept thresholds in the review rules.
    pub fn keyword_thresholds(&self) -> std::collections::BTreeMap<String, f32> {
        self.snapshot()
            .heads()
            .iter()
            .filter_map(|h| h.keyword_threshold())
            .map(|(k, t)| (k.to_string(), t))
            .collect()
    }

    /// Serves exactly `concepts` as the trained concepts: the ones missing
    /// from it are removed, the others installed or replaced, in one swap.
    pub fn serve_trained(&self, concepts: &[domain::concept::ConceptHead]) {
        self.update(|h| {
            h.retain(|head| head.kind() != TRAINED);
            for c in concepts {
                h.install(Arc::new(LinearConceptHead::new(
                    &c.name,
                    &c.model,
                    c.weights.clone(),
                    c.bias,
                )));
            }
        });
    }
}

/// The kind of [`LinearConceptHead`].
const TRAINED: &str = "trained_concept";
