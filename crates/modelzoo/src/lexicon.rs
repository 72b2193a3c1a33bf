//! The search lexicon: which of the classifier's terms a query word stands
//! for, through WordNet 3.0.
//!
//! A term is a concept the analysis can report: an ImageNet class label, a
//! broad roll-up concept, a stock keyword. A WordNet noun synset *covers*
//! the terms at or below it (its hyponyms, transitively): "animal" covers
//! every animal class, "mug" covers "coffee mug". A lemma (a word or phrase
//! naming a synset) stands for what its synsets cover, at weight 1. A lemma
//! whose synsets cover nothing stands for what their direct hypernyms cover,
//! at weight 0.8, when that is at most [`MAX_HYPERNYM_TERMS`] classes and
//! roll-ups: "puppy" (young dog) finds dogs. Stock keywords sit under the
//! synsets their name is a lemma of ("sky", "sea"), for their hyponyms,
//! but never stand in through a hypernym (they are too broad for it).
//!
//! The file (`search/lexicon.tsv` under the home), tab-separated:
//!
//! ```text
//! S  n02084071  dog  Labrador Retriever  ...   the terms a synset covers
//! L  puppy  0.8  n02084071                     a lemma, its weight, its synsets
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::wordnet::{Classes, ConceptMap, Wnid, WordNet};

/// Bumped when the lexicon's rules change, so `models fetch` rebuilds it.
pub const LEXICON_VERSION: u32 = 2;

/// The weight of a term reached through a hypernym.
pub const HYPERNYM_WEIGHT: f32 = 0.8;
/// A hypernym covering more terms than this is too broad to stand for a word.
pub const MAX_HYPERNYM_TERMS: usize = 150;

/// Builds the lexicon's text. `stock` names the stock keywords, placed under
/// every synset that has their name as a lemma.
pub fn build_lexicon(
    wordnet: &WordNet,
    classes: &Classes,
    concepts: &ConceptMap,
    stock: &[String],
) -> String {
    // The synsets each term sits under.
    let mut places: Vec<(String, Vec<Wnid>)> = classes
        .labels
        .iter()
        .zip(&classes.wnids)
        .map(|(label, &w)| (label.clone(), vec![w]))
        .collect();
    for broad in concepts.concepts() {
        let synsets = broad
            .synsets
            .iter()
            .filter_map(|s| s.parse::<Wnid>().ok())
            .collect();
        places.push((broad.name.clone(), synsets));
    }
    let mut by_lemma: HashMap<String, Vec<Wnid>> = HashMap::new();
    for (id, synset) in wordnet.iter() {
        for lemma in &synset.lemmas {
            by_lemma.entry(lemma_key(lemma)).or_default().push(id);
        }
    }
    // What each synset covers: the classes and roll-ups first (what a
    // hypernym may stand in with), then the stock keywords, placed under
    // every synset their name is a lemma of.
    let cover = |places: &[(String, Vec<Wnid>)], covers: &mut BTreeMap<Wnid, BTreeSet<String>>| {
        for (term, synsets) in places {
            for &s in synsets {
                for a in wordnet.ancestors(s) {
                    covers.entry(a).or_default().insert(term.clone());
                }
            }
        }
    };
    let mut covers: BTreeMap<Wnid, BTreeSet<String>> = BTreeMap::new();
    cover(&places, &mut covers);
    let hypernym_covers = covers.clone();
    let stock_places: Vec<(String, Vec<Wnid>)> = stock
        .iter()
        .map(|name| {
            let synsets = by_lemma
                .get(&name.to_lowercase())
                .cloned()
                .unwrap_or_default();
            (name.clone(), synsets)
        })
        .collect();
    cover(&stock_places, &mut covers);
    let mut used: BTreeSet<Wnid> = BTreeSet::new();
    let mut lemmas: BTreeMap<String, (f32, Vec<Wnid>)> = BTreeMap::new();
    for (lemma, synsets) in &by_lemma {
        let mut direct: Vec<Wnid> = synsets
            .iter()
            .copied()
            .filter(|s| covers.contains_key(s))
            .collect();
        let weight = if direct.is_empty() {
            direct = synsets
                .iter()
                .filter_map(|&s| wordnet.synset(s))
                .flat_map(|s| s.hypernyms.iter().copied())
                .filter(|h| {
                    hypernym_covers
                        .get(h)
                        .is_some_and(|c| c.len() <= MAX_HYPERNYM_TERMS)
                })
                .collect();
            HYPERNYM_WEIGHT
        } else {
            1.0
        };
        if direct.is_empty() {
            continue;
        }
        direct.sort();
        direct.dedup();
        used.extend(direct.iter().copied());
        lemmas.insert(lemma.clone(), (weight, direct));
    }
    let mut out = String::from(
        "# Darkroom search lexicon, built from WordNet 3.0 by `darkroom models fetch`.\n\
         # S synset covered-terms... | L lemma weight synsets...\n",
    );
    for s in &used {
        out.push_str(&format!("S\t{s}"));
        for term in &covers[s] {
            out.push('\t');
            out.push_str(term);
        }
        out.push('\n');
    }
    for (lemma, (weight, synsets)) in &lemmas {
        out.push_str(&format!("L\t{lemma}\t{weight}"));
        for s in synsets {
            out.push_str(&format!("\t{s}"));
        }
        out.push('\n');
    }
    out
}

/// `Domestic_Cat` → `domestic cat`.
fn lemma_key(lemma: &str) -> String {
    lemma.replace('_', " ").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::concepts::BroadConcept;
    use std::path::Path;

    /// A tiny WordNet: entity > animal > dog > {puppy, terrier}; animal > cat.
    const DATA: &str = "\
00001740 03 n 01 entity 0 000 | x
00015388 05 n 01 animal 0 001 @ 00001740 n 0000 | x
02084071 05 n 01 dog 0 001 @ 00015388 n 0000 | x
01322604 05 n 01 puppy 0 001 @ 02084071 n 0000 | x
02092468 05 n 01 terrier 0 001 @ 02084071 n 0000 | x
02121620 05 n 02 cat 0 true_cat 0 001 @ 00015388 n 0000 | x
09436708 17 n 01 sky 0 001 @ 00001740 n 0000 | x
";

    #[test]
    fn lemmas_stand_for_what_their_synsets_cover() {
        let wordnet = WordNet::parse(DATA, Path::new("data.noun")).unwrap();
        let classes = Classes {
            labels: vec!["Airedale Terrier".into(), "tabby cat".into()],
            wnids: vec!["n02092468".parse().unwrap(), "n02121620".parse().unwrap()],
        };
        let concepts = ConceptMap::new(
            classes.labels.clone(),
            classes.wnids.iter().map(Wnid::to_string).collect(),
            vec![BroadConcept {
                name: "animal".into(),
                synsets: vec!["n00015388".into()],
                classes: vec![0, 1],
            }],
        )
        .unwrap();
        let text = build_lexicon(&wordnet, &classes, &concepts, &["sky".to_string()]);
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
                .to_string()
        };
        assert_eq!(line("S\tn02084071"), "S\tn02084071\tAiredale Terrier");
        assert_eq!(line("L\tdog\t"), "L\tdog\t1\tn02084071");
        // Nothing under puppy: it stands for its hypernym, dog.
        assert_eq!(line("L\tpuppy\t"), "L\tpuppy\t0.8\tn02084071");
        assert_eq!(line("L\ttrue cat\t"), "L\ttrue cat\t1\tn02121620");
        assert!(line("S\tn00015388").contains("animal"));
        assert_eq!(line("L\tsky\t"), "L\tsky\t1\tn09436708");
    }
}
