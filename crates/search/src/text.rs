//! Free text → a [`TextPlan`] over the catalogue's terms.
//!
//! The query's words are read left to right, taking the longest phrase (up
//! to [`MAX_PHRASE`] words) that is a term of the catalogue or a lemma of
//! the lexicon. Each such phrase is a *unit*, and every unit must match:
//!
//! - a term spelled the same (weight 1);
//! - the terms the lexicon gives it: WordNet synonyms and hyponyms (1),
//!   or, for a word with nothing below it, its hypernym's (0.8);
//! - a single word also matches the multi-word terms that contain it
//!   ("mug" → "coffee mug", 0.9);
//! - an English plural falls back to its singular.
//!
//! Words that are none of these (stop words aside), and known words that
//! stand for nothing any photo has, are read as one phrase by the text
//! encoder, when one is loaded, and matched to the nearest concept terms
//! by cosine similarity (see [`crate::encoder`]); without an encoder such
//! a query matches nothing, rather than everything.

use std::collections::HashMap;
use std::path::Path;

use crate::catalogue::{is_stop_word, words, Catalogue, TextPlan};
use crate::encoder::TermEncoder;
use crate::SearchError;

/// The longest phrase looked up, in words.
pub const MAX_PHRASE: usize = 5;
/// A single word matching inside a multi-word term.
pub const PART_WEIGHT: f32 = 0.9;

/// WordNet's word → terms map (see `modelzoo::lexicon`).
#[derive(Debug, Clone, Default)]
pub struct Lexicon {
    /// Lemma → (weight, the terms its synsets cover, lowercased).
    lemmas: HashMap<String, (f32, Vec<String>)>,
}

impl Lexicon {
    pub fn empty() -> Lexicon {
        Lexicon::default()
    }

    pub fn load(path: &Path) -> Result<Lexicon, SearchError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SearchError::Internal(format!("reading the lexicon {}: {e}", path.display()))
        })?;
        Lexicon::parse(&text).map_err(|(line, reason)| {
            SearchError::Internal(format!("{}:{line}: {reason}", path.display()))
        })
    }

    pub fn parse(text: &str) -> Result<Lexicon, (usize, String)> {
        let mut synsets: HashMap<&str, Vec<String>> = HashMap::new();
        let mut lemmas = HashMap::new();
        for (at, line) in text.lines().enumerate() {
            let mut fields = line.split('\t');
            match fields.next() {
                Some("S") => {
                    let id = fields.next().ok_or((at + 1, "no synset id".to_string()))?;
                    synsets.insert(id, fields.map(str::to_lowercase).collect());
                }
                Some("L") => {
                    let lemma = fields.next().ok_or((at + 1, "no lemma".to_string()))?;
                    let weight: f32 = fields
                        .next()
                        .and_then(|w| w.parse().ok())
                        .ok_or((at + 1, "no weight".to_string()))?;
                    let mut terms = Vec::new();
                    for id in fields {
                        let covered = synsets
                            .get(id)
                            .ok_or((at + 1, format!("synset {id} is not listed above")))?;
                        terms.extend(covered.iter().cloned());
                    }
                    terms.sort();
                    terms.dedup();
                    lemmas.insert(lemma.to_string(), (weight, terms));
                }
                _ if line.starts_with('#') || line.trim().is_empty() => {}
                _ => return Err((at + 1, "a line must start with S or L".to_string())),
            }
        }
        Ok(Lexicon { lemmas })
    }

    pub fn len(&self) -> usize {
        self.lemmas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lemmas.is_empty()
    }

    fn get(&self, phrase: &str) -> Option<&(f32, Vec<String>)> {
        self.lemmas.get(phrase)
    }
}

/// How a query's text was read: shown to the client, so a surprising
/// result can be explained.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reading {
    /// Per unit: the phrase and the terms it matches, best weight first (at
    /// most 10 shown).
    pub units: Vec<(String, Vec<(String, f32)>)>,
}

/// Resolves `text` against the catalogue's terms.
pub fn plan(
    text: &str,
    catalogue: &Catalogue,
    lexicon: &Lexicon,
    encoder: Option<&TermEncoder>,
) -> Result<(TextPlan, Reading), SearchError> {
    let ws = words(text);
    let mut plan: TextPlan = Vec::new();
    let mut reading = Reading::default();
    let mut unknown: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < ws.len() {
        let mut matched = false;
        for n in (1..=MAX_PHRASE.min(ws.len() - i)).rev() {
            let phrase = ws[i..i + n].join(" ");
            match expand(&phrase, catalogue, lexicon) {
                // A known word that no photo here has anything for: the
                // encoder may still find its neighbours ("mug" → cup).
                Some(unit) if unit.is_empty() && encoder.is_some() => {
                    unknown.extend(ws[i..i + n].iter().map(String::as_str));
                }
                Some(unit) => push_unit(&mut plan, &mut reading, phrase, unit, catalogue),
                None => continue,
            }
            i += n;
            matched = true;
            break;
        }
        if !matched {
            if !is_stop_word(&ws[i]) {
                unknown.push(&ws[i]);
            }
            i += 1;
        }
    }
    if !unknown.is_empty() {
        let phrase = unknown.join(" ");
        let unit = match encoder {
            Some(e) => e.nearest(&phrase, catalogue)?,
            None => Vec::new(),
        };
        push_unit(&mut plan, &mut reading, phrase, unit, catalogue);
    }
    Ok((plan, reading))
}

fn push_unit(
    plan: &mut TextPlan,
    reading: &mut Reading,
    phrase: String,
    mut unit: Vec<(u32, f32)>,
    catalogue: &Catalogue,
) {
    // Best weight first, then the terms most photos hold: what the
    // echo shows first is what the results are mostly about.
    unit.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then(catalogue.term_photos(b.0).cmp(&catalogue.term_photos(a.0)))
            .then(a.0.cmp(&b.0))
    });
    let shown = unit
        .iter()
        .take(10)
        .map(|&(t, w)| (catalogue.term_name(t).to_string(), w))
        .collect();
    reading.units.push((phrase, shown));
    plan.push(unit);
}

/// The terms `phrase` stands for, or `None` when it is not a known word or
/// phrase (nothing in the catalogue, nothing in the lexicon).
fn expand(phrase: &str, catalogue: &Catalogue, lexicon: &Lexicon) -> Option<Vec<(u32, f32)>> {
    let mut known = false;
    let mut found: HashMap<u32, f32> = HashMap::new();
    fn add(found: &mut HashMap<u32, f32>, t: u32, w: f32) {
        let e = found.entry(t).or_insert(0.0);
        *e = e.max(w);
    }
    for form in forms(phrase) {
        if let Some(t) = catalogue.term_id(&form) {
            known = true;
            add(&mut found, t, 1.0);
        }
        if !form.contains(' ') {
            for &t in catalogue.terms_with_word(&form) {
                known = true;
                add(&mut found, t, PART_WEIGHT);
            }
        }
        if let Some((weight, terms)) = lexicon.get(&form) {
            known = true;
            // A hypernym stands in only for a word with nothing of its own.
            if *weight >= 1.0 || found.is_empty() {
                for term in terms {
                    if let Some(t) = catalogue.term_id(term) {
                        add(&mut found, t, *weight);
                    }
                }
            }
        }
        if known {
            break;
        }
    }
    known.then(|| found.into_iter().collect())
}

/// The phrase, then its singular when it looks plural ("dogs" → "dog",
/// "boxes" → "box", "puppies" → "puppy"; the last word of a phrase).
fn forms(phrase: &str) -> Vec<String> {
    let mut out = vec![phrase.to_string()];
    let (head, last) = match phrase.rsplit_once(' ') {
        Some((h, l)) => (format!("{h} "), l),
        None => (String::new(), phrase),
    };
    if last.len() > 3 {
        if let Some(stem) = last.strip_suffix("ies") {
            out.push(format!("{head}{stem}y"));
        }
        if let Some(stem) = last.strip_suffix("es") {
            out.push(format!("{head}{stem}"));
        }
        if let Some(stem) = last.strip_suffix('s').filter(|s| !s.ends_with('s')) {
            out.push(format!("{head}{stem}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Doc, TermKind};
    use domain::photo::Status;

    fn doc(id: &str, terms: &[(&str, f32)]) -> Doc {
        Doc {
            id: id.into(),
            seq: 1,
            created_ms: 0,
            status: Status::Published,
            uploader: None,
            width: 10,
            height: 10,
            quality: None,
            popular: f32::NEG_INFINITY,
            terms: terms
                .iter()
                .map(|(t, s)| (t.to_string(), *s, TermKind::Concept))
                .collect(),
        }
    }

    #[test]
    fn words_phrases_synonyms_and_plurals_resolve_to_terms() {
        let mut c = Catalogue::new(None);
        c.upsert(&doc(
            "a",
            &[
                ("coffee mug", 0.8),
                ("dog", 0.9),
                ("Labrador Retriever", 0.7),
            ],
        ));
        let lexicon =
            Lexicon::parse("S\tn1\tdog\tLabrador Retriever\nL\tpuppy\t0.8\tn1\nL\tdog\t1\tn1\n")
                .unwrap();
        let names = |text: &str| {
            let (plan, reading) = plan(text, &c, &lexicon, None).unwrap();
            assert_eq!(plan.len(), reading.units.len());
            reading
                .units
                .into_iter()
                .map(|(p, terms)| (p, terms.into_iter().map(|t| t.0).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names("Puppies"),
            [(
                "puppies".to_string(),
                vec!["dog".to_string(), "Labrador Retriever".into()]
            )]
        );
        assert_eq!(names("a mug")[0].1, ["coffee mug"]);
        assert_eq!(names("coffee mug")[0].0, "coffee mug");
        // An unknown word with no encoder: a unit that matches nothing.
        let unknown = names("dog zebra");
        assert_eq!(unknown.len(), 2);
        assert!(unknown[1].1.is_empty());
    }

    #[test]
    fn a_bad_lexicon_line_is_named() {
        assert_eq!(Lexicon::parse("L\tx\t1\tn9\n").unwrap_err().0, 1);
        assert_eq!(Lexicon::parse("# c\nZ\n").unwrap_err().0, 2);
    }
}
