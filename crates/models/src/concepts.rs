//! Concepts: ImageNet classes and broader WordNet concepts scored from classifier probabilities.
//!
//! `concepts.json` (written by modelzoo's WordNet roll-up) holds the classifier's
//! readable labels and the broad concepts ("animal", "vehicle") with the class
//! indices under each. At run time a broad concept scores the summed probability
//! of its classes: the classifier often spreads its belief over sibling classes
//! (three kinds of cat), and the sum says confidently what they have in common.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// A broad concept and the classifier classes it covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadConcept {
    /// What the API returns, e.g. "animal" or "sea life".
    pub name: String,
    /// The WordNet 3.0 noun ids it was rolled up from (provenance only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synsets: Vec<String>,
    /// Class indices, ascending, without repeats.
    pub classes: Vec<usize>,
}

/// Why a concept map is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid concept map: {reason}")]
pub struct InvalidConceptMap {
    pub reason: String,
}

fn invalid(reason: impl Into<String>) -> InvalidConceptMap {
    InvalidConceptMap {
        reason: reason.into(),
    }
}

/// The on-disk shape of `concepts.json`; `ConceptMap` is its validated form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConceptMapFile {
    labels: Vec<String>,
    #[serde(default)]
    wnids: Vec<String>,
    concepts: Vec<BroadConcept>,
}

/// Borrowed twin of `ConceptMapFile`, so writing never clones the map.
#[derive(Serialize)]
struct ConceptMapFileRef<'a> {
    labels: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    wnids: &'a [String],
    concepts: &'a [BroadConcept],
}

/// Class labels plus broad concepts, ready to score probability vectors.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "ConceptMapFile")]
pub struct ConceptMap {
    labels: Vec<String>,
    wnids: Vec<String>,
    concepts: Vec<BroadConcept>,
    /// Distinct labels in first-seen order: classes sharing a readable name
    /// (ImageNet's two "missile"s) are one concept to a photo buyer.
    names: Vec<String>,
    /// Class index → index into `names`.
    name_of_class: Vec<usize>,
    /// Per broad concept (by index), the score below which it is not
    /// reported (0: always; infinite: never). See [`ConceptMap::with_floors`].
    floors: Vec<f32>,
}

/// What `ConceptMap::score` returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConceptOptions {
    /// At most this many concepts, best first.
    pub top_k: usize,
    /// Concepts scoring less than this are dropped.
    pub min_confidence: f32,
    /// Also score the broad concepts, not only the classifier's own classes.
    pub include_broad: bool,
}

impl Default for ConceptOptions {
    fn default() -> Self {
        ConceptOptions {
            top_k: 10,
            min_confidence: 0.05,
            include_broad: true,
        }
    }
}

impl TryFrom<ConceptMapFile> for ConceptMap {
    type Error = InvalidConceptMap;

    fn try_from(file: ConceptMapFile) -> Result<Self, InvalidConceptMap> {
        ConceptMap::new(file.labels, file.wnids, file.concepts)
    }
}

impl Serialize for ConceptMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ConceptMapFileRef {
            labels: &self.labels,
            wnids: &self.wnids,
            concepts: &self.concepts,
        }
        .serialize(serializer)
    }
}

impl ConceptMap {
    /// Checks and indexes a map. `wnids` is empty or one WordNet id per label;
    /// each concept needs a unique non-empty name and at least one class in
    /// range (its class list is sorted and deduplicated here).
    pub fn new(
        labels: Vec<String>,
        wnids: Vec<String>,
        mut concepts: Vec<BroadConcept>,
    ) -> Result<Self, InvalidConceptMap> {
        if labels.is_empty() {
            return Err(invalid("no class labels"));
        }
        if let Some(i) = labels.iter().position(|l| l.trim().is_empty()) {
            return Err(invalid(format!("class {i} has an empty label")));
        }
        if !wnids.is_empty() && wnids.len() != labels.len() {
            return Err(invalid(format!(
                "{} WordNet ids for {} labels",
                wnids.len(),
                labels.len()
            )));
        }
        let mut seen = HashMap::new();
        for (at, concept) in concepts.iter_mut().enumerate() {
            if concept.name.trim().is_empty() {
                return Err(invalid(format!("concept #{at} has an empty name")));
            }
            if let Some(first) = seen.insert(concept.name.as_str(), at) {
                return Err(invalid(format!(
                    "concept `{}` appears twice (#{first} and #{at})",
                    concept.name
                )));
            }
            concept.classes.sort_unstable();
            concept.classes.dedup();
            match concept.classes.last() {
                None => {
                    return Err(invalid(format!(
                        "concept `{}` covers no class",
                        concept.name
                    )))
                }
                Some(&last) if last >= labels.len() => {
                    return Err(invalid(format!(
                        "concept `{}` names class {last}, but there are {} classes",
                        concept.name,
                        labels.len()
                    )))
                }
                Some(_) => {}
            }
        }

        let mut names = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut name_of_class = Vec::with_capacity(labels.len());
        for label in &labels {
            let next = names.len();
            let at = *index.entry(label.as_str()).or_insert(next);
            if at == next {
                names.push(label.clone());
            }
            name_of_class.push(at);
        }
        Ok(ConceptMap {
            labels,
            wnids,
            floors: vec![0.0; concepts.len()],
            names,
            name_of_class,
            concepts,
        })
    }

    /// Reports each named broad concept only at or above its floor (`None`:
    /// never), as measured on labelled photos (`data/rollup_calibration.json`).
    /// Names the map does not have are ignored.
    pub fn with_floors<'a>(
        mut self,
        floors: impl IntoIterator<Item = (&'a str, Option<f32>)>,
    ) -> ConceptMap {
        for (name, floor) in floors {
            if let Some(i) = self.concepts.iter().position(|c| c.name == name) {
                self.floors[i] = floor.unwrap_or(f32::INFINITY);
            }
        }
        self
    }

    /// Whether the broad concept `name` can be reported at all.
    pub fn reports_broad(&self, name: &str) -> bool {
        self.concepts
            .iter()
            .zip(&self.floors)
            .any(|(c, f)| c.name == name && f.is_finite())
    }

    /// Reads `concepts.json`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// How many classes the classifier must output.
    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }

    /// Readable class names, by class index (names may repeat).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// WordNet ids by class index; empty when the map was built without them.
    pub fn wnids(&self) -> &[String] {
        &self.wnids
    }

    /// Whether `concept` is one this map reports (a class name or a broad
    /// concept), compared without regard to case.
    pub fn reports(&self, concept: &str) -> bool {
        self.names
            .iter()
            .chain(self.concepts.iter().map(|c| &c.name))
            .any(|n| n.eq_ignore_ascii_case(concept))
    }

    /// The broad concepts, in vocabulary order.
    pub fn concepts(&self) -> &[BroadConcept] {
        &self.concepts
    }

    /// Names of the broad concepts covering any class labelled `label`
    /// ("tabby cat" → cat, pet, mammal, animal, ...), in vocabulary order;
    /// empty for a label that is not a class.
    pub fn groups_of(&self, label: &str) -> Vec<String> {
        let classes: Vec<usize> = (0..self.labels.len())
            .filter(|&i| self.labels[i] == label)
            .collect();
        self.concepts
            .iter()
            .filter(|c| classes.iter().any(|i| c.classes.binary_search(i).is_ok()))
            .map(|c| c.name.clone())
            .collect()
    }

    /// Concepts for one photo from its class probabilities (see `softmax`).
    ///
    /// Classes sharing a readable name are merged by summing; each broad
    /// concept scores the sum of its classes. A name that is both a class and
    /// a broad concept ("mushroom") keeps the higher score. The result holds
    /// those scoring at least `min_confidence`, best first (on a tie, the one
    /// covering fewer classes, then by name), at most `top_k`. Probabilities past the last class are ignored and missing
    /// ones count as zero: callers check `num_classes` against the model once.
    pub fn score(&self, probs: &[f32], opts: &ConceptOptions) -> Vec<(String, f32)> {
        // (summed probability, classes summed) per distinct label.
        let mut by_name = vec![(0f32, 0usize); self.names.len()];
        for (&name, &p) in self.name_of_class.iter().zip(probs) {
            by_name[name].0 += p;
            by_name[name].1 += 1;
        }
        let mut best = HashMap::new();
        for (name, &(score, breadth)) in self.names.iter().zip(&by_name) {
            offer(&mut best, name, (score, breadth), opts.min_confidence);
        }
        if opts.include_broad {
            for (concept, &floor) in self.concepts.iter().zip(&self.floors) {
                let score: f32 = concept
                    .classes
                    .iter()
                    .map(|&i| probs.get(i).copied().unwrap_or(0.0))
                    .sum();
                if score < floor {
                    continue;
                }
                let scored = (score, concept.classes.len());
                offer(&mut best, &concept.name, scored, opts.min_confidence);
            }
        }
        let mut ranked: Vec<(&str, (f32, usize))> = best.into_iter().collect();
        // Equal scores (a photo whose probability sits in one subtree gives
        // "cat", "mammal" and "animal" the same sum): the narrower concept,
        // covering fewer classes, says more and goes first.
        ranked.sort_by(|(a, (sa, ba)), (b, (sb, bb))| {
            sb.total_cmp(sa).then(ba.cmp(bb)).then_with(|| a.cmp(b))
        });
        ranked.truncate(opts.top_k);
        ranked
            .into_iter()
            .map(|(name, (score, _))| (name.to_owned(), score))
            .collect()
    }
}

/// Keeps `name` at its highest (score, breadth), if the score is at least
/// `min` (NaN never is).
fn offer<'a>(
    best: &mut HashMap<&'a str, (f32, usize)>,
    name: &'a str,
    scored: (f32, usize),
    min: f32,
) {
    if scored.0 >= min {
        let kept = best.entry(name).or_insert(scored);
        if scored.0 > kept.0 {
            *kept = scored;
        }
    }
}

/// Probabilities from logits, computed stably (the largest logit is
/// subtracted first, so no `exp` overflows). An infinite largest logit puts
/// all the mass, shared evenly, on the logits equal to it; NaN in gives NaN out.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max.is_infinite() {
        let ties = logits.iter().filter(|&&x| x == max).count() as f32;
        return logits
            .iter()
            .map(|&x| if x == max { 1.0 / ties } else { 0.0 })
            .collect();
    }
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concept(name: &str, classes: &[usize]) -> BroadConcept {
        BroadConcept {
            name: name.into(),
            synsets: vec![],
            classes: classes.to_vec(),
        }
    }

    /// Seven classes shaped like ImageNet's awkward corners: siblings under one
    /// concept, a repeated label, and a label that is also a broad concept.
    fn map() -> ConceptMap {
        let labels = [
            "tabby cat",
            "Egyptian Mau",
            "missile",
            "missile",
            "espresso",
            "mushroom",
            "agaric",
        ];
        ConceptMap::new(
            labels.iter().map(|s| s.to_string()).collect(),
            vec![],
            vec![
                concept("cat", &[0, 1]),
                concept("animal", &[1, 0]),
                concept("weapon", &[2, 3]),
                concept("drink", &[4]),
                concept("mushroom", &[5, 6]),
            ],
        )
        .unwrap()
    }

    fn all() -> ConceptOptions {
        ConceptOptions {
            top_k: usize::MAX,
            min_confidence: 0.0,
            include_broad: true,
        }
    }

    fn get(scored: &[(String, f32)], name: &str) -> Option<f32> {
        scored.iter().find(|(n, _)| n == name).map(|&(_, s)| s)
    }

    #[test]
    fn broad_concepts_sum_their_classes() {
        let scored = map().score(&[0.39, 0.36, 0.0, 0.0, 0.25, 0.0, 0.0], &all());
        assert!((get(&scored, "cat").unwrap() - 0.75).abs() < 1e-6);
        assert!((get(&scored, "animal").unwrap() - 0.75).abs() < 1e-6);
        assert_eq!(get(&scored, "tabby cat"), Some(0.39));
        assert_eq!(get(&scored, "drink"), Some(0.25));
    }

    #[test]
    fn repeated_labels_merge_into_one_concept() {
        let opts = ConceptOptions {
            include_broad: false,
            ..all()
        };
        let scored = map().score(&[0.0, 0.0, 0.3, 0.2, 0.5, 0.0, 0.0], &opts);
        assert_eq!(scored.iter().filter(|(n, _)| n == "missile").count(), 1);
        assert!((get(&scored, "missile").unwrap() - 0.5).abs() < 1e-6);
    }

    #[test]
    fn a_name_that_is_class_and_concept_keeps_the_higher_score() {
        let scored = map().score(&[0.0, 0.0, 0.0, 0.0, 0.5, 0.2, 0.3], &all());
        assert_eq!(scored.iter().filter(|(n, _)| n == "mushroom").count(), 1);
        assert!((get(&scored, "mushroom").unwrap() - 0.5).abs() < 1e-6);

        let classes_only = ConceptOptions {
            include_broad: false,
            ..all()
        };
        let scored = map().score(&[0.0, 0.0, 0.0, 0.0, 0.5, 0.2, 0.3], &classes_only);
        assert_eq!(get(&scored, "mushroom"), Some(0.2));
        assert_eq!(get(&scored, "cat"), None);
    }

    #[test]
    fn results_are_thresholded_sorted_and_cut_to_top_k() {
        let probs = [0.39, 0.36, 0.1, 0.05, 0.06, 0.02, 0.02];
        let opts = ConceptOptions {
            top_k: 4,
            min_confidence: 0.1,
            include_broad: true,
        };
        let scored = map().score(&probs, &opts);
        let names: Vec<&str> = scored.iter().map(|(n, _)| n.as_str()).collect();
        // cat and animal tie at 0.75: name order breaks the tie.
        assert_eq!(names, ["animal", "cat", "tabby cat", "Egyptian Mau"]);
        assert!(scored.windows(2).all(|w| w[0].1 >= w[1].1));

        let opts = ConceptOptions { top_k: 10, ..opts };
        let scored = map().score(&probs, &opts);
        assert!(scored.iter().all(|&(_, s)| s >= 0.1));
        assert_eq!(
            get(&scored, "missile").map(|s| (s * 100.0).round()),
            Some(15.0)
        );
        assert_eq!(get(&scored, "drink"), None);
    }

    #[test]
    fn on_a_tie_the_narrower_concept_goes_first() {
        let labels = ["x", "y", "z"].map(String::from).to_vec();
        let concepts = vec![concept("a wide", &[0, 1, 2]), concept("narrow", &[0, 1])];
        let map = ConceptMap::new(labels, vec![], concepts).unwrap();
        let scored = map.score(&[0.5, 0.5, 0.0], &all());
        let names: Vec<&str> = scored.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["narrow", "a wide", "x", "y", "z"]);
    }

    #[test]
    fn short_or_long_probability_vectors_do_not_panic() {
        let scored = map().score(&[0.9], &all());
        assert_eq!(get(&scored, "tabby cat"), Some(0.9));
        assert_eq!(get(&scored, "cat"), Some(0.9));
        let long = [0.1; 20];
        assert!(!map().score(&long, &all()).is_empty());
        assert!(map().score(&[f32::NAN; 7], &all()).is_empty());
    }

    #[test]
    fn groups_of_a_label() {
        assert_eq!(map().groups_of("tabby cat"), ["cat", "animal"]);
        assert_eq!(map().groups_of("missile"), ["weapon"]);
        assert!(map().groups_of("unicorn").is_empty());
    }

    #[test]
    fn softmax_is_stable_and_normalised() {
        let p = softmax(&[1000.0, 1001.0, 1002.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[2] - 0.665_240_9).abs() < 1e-6 && p[0] < p[1] && p[1] < p[2]);
        let q = softmax(&[0.0, 1.0, 2.0]);
        assert!(p.iter().zip(&q).all(|(a, b)| (a - b).abs() < 1e-6));
        assert!(softmax(&[]).is_empty());
        assert_eq!(
            softmax(&[f32::INFINITY, 1.0, f32::INFINITY]),
            [0.5, 0.0, 0.5]
        );
        assert_eq!(softmax(&[f32::NEG_INFINITY; 2]), [0.5, 0.5]);
        assert_eq!(softmax(&[f32::NEG_INFINITY, 0.0]), [0.0, 1.0]);
        assert!(softmax(&[f32::NAN, 1.0]).iter().all(|x| x.is_nan()));
    }

    #[test]
    fn new_refuses_maps_that_cannot_score() {
        let labels = || vec!["a".to_string(), "b".to_string()];
        let err = |concepts, wnids| {
            ConceptMap::new(labels(), wnids, concepts)
                .unwrap_err()
                .reason
        };
        assert!(err(vec![concept("x", &[])], vec![]).contains("covers no class"));
        assert!(err(vec![concept("x", &[2])], vec![]).contains("names class 2"));
        assert!(err(vec![concept("x", &[0]), concept("x", &[1])], vec![]).contains("twice"));
        assert!(err(vec![concept(" ", &[0])], vec![]).contains("empty name"));
        assert!(err(vec![], vec!["n1".into()]).contains("1 WordNet ids for 2 labels"));
        assert!(ConceptMap::new(vec![], vec![], vec![]).is_err());
        let sorted = ConceptMap::new(labels(), vec![], vec![concept("x", &[1, 0, 1])]).unwrap();
        assert_eq!(sorted.concepts()[0].classes, [0, 1]);
    }

    #[test]
    fn json_round_trip_and_load_errors() {
        let json = serde_json::to_string(&map()).unwrap();
        assert!(json.starts_with(r#"{"labels":["tabby cat""#), "{json}");
        assert!(!json.contains("wnids") && !json.contains("synsets"));
        let back: ConceptMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, map());

        let dir = std::env::temp_dir().join(format!("darkroom-concepts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("concepts.json");
        std::fs::write(&good, &json).unwrap();
        assert_eq!(ConceptMap::load(&good).unwrap().num_classes(), 7);

        let bad = dir.join("bad.json");
        std::fs::write(
            &bad,
            r#"{"labels":["a"],"concepts":[{"name":"x","classes":[3]}]}"#,
        )
        .unwrap();
        let err = ConceptMap::load(&bad).unwrap_err();
        assert!(
            matches!(err, ModelError::Config { ref path, .. } if path == &bad),
            "{err}"
        );
        assert!(err.to_string().contains("names class 3"), "{err}");
        let missing = ConceptMap::load(dir.join("missing.json")).unwrap_err();
        assert!(matches!(missing, ModelError::Io { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
