//! WordNet roll-up: ImageNet classes → the broad concepts of `data/concepts.toml`.
//!
//! ImageNet-1k class ids are WordNet 3.0 noun ids, so following hypernym
//! pointers in Debian's `data.noun` takes "tabby cat" up through cat, feline
//! and mammal to animal. `build_concepts` does that for every class and every
//! concept of the vocabulary, and returns the `ConceptMap` that the fetch step
//! writes as `concepts.json`. Every input is checked on the way: a wrong offset,
//! lemma or empty concept in the vocabulary fails the build with its line.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

pub use models::concepts::{BroadConcept, ConceptMap, InvalidConceptMap};

#[derive(Debug, thiserror::Error)]
pub enum WordnetError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Malformed JSON; serde_json's message carries the line and column.
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Malformed TOML; toml's message carries the line, column and a snippet.
    #[error("{path}: {source}")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    /// Well-formed but wrong: a bad data.noun record, an unknown synset, a
    /// lemma that does not match its offset, a concept with no class.
    #[error("{path}:{line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The class lists disagree (their JSON is one line, so no line number).
    #[error("{path}: {reason}")]
    Classes { path: PathBuf, reason: String },
    #[error(transparent)]
    Map(#[from] InvalidConceptMap),
}

type Result<T, E = WordnetError> = std::result::Result<T, E>;

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| WordnetError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn json(path: &Path) -> impl FnOnce(serde_json::Error) -> WordnetError + '_ {
    move |source| WordnetError::Json {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, line: usize, reason: impl Into<String>) -> WordnetError {
    WordnetError::Invalid {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// A WordNet 3.0 noun synset id as ImageNet writes it: `n` and the 8-digit
/// byte offset of the synset's line in data.noun.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Wnid(u32);

impl Wnid {
    pub fn offset(self) -> u32 {
        self.0
    }
}

impl FromStr for Wnid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix('n').unwrap_or("");
        if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{s}` is not a WordNet noun id like n02084071"));
        }
        digits.parse().map(Wnid).map_err(|e| e.to_string())
    }
}

impl fmt::Display for Wnid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{:08}", self.0)
    }
}

/// One noun synset: its lemmas and its direct hypernyms.
#[derive(Debug, Clone, PartialEq)]
pub struct Synset {
    /// As written in data.noun, with `_` for spaces ("domestic_cat").
    pub lemmas: Vec<String>,
    /// `@` (hypernym) and `@i` (instance hypernym) targets.
    pub hypernyms: Vec<Wnid>,
    /// Line in data.noun, for messages.
    pub line: usize,
}

impl Synset {
    /// Whether `lemma` names this synset, ignoring case and `_` versus space.
    pub fn has_lemma(&self, lemma: &str) -> bool {
        let norm = |s: &str| s.replace(' ', "_").to_lowercase();
        let lemma = norm(lemma);
        self.lemmas.iter().any(|l| norm(l) == lemma)
    }
}

/// The noun hierarchy of WordNet 3.0 (data.noun).
#[derive(Debug, Clone, Default)]
pub struct WordNet {
    synsets: HashMap<Wnid, Synset>,
}

impl WordNet {
    pub fn load(data_noun: &Path) -> Result<Self> {
        Self::parse(&read(data_noun)?, data_noun)
    }

    /// Parses the text of data.noun; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut synsets = HashMap::new();
        for (at, record) in text.lines().enumerate() {
            let line = at + 1;
            // The licence header: every line of it starts with two spaces.
            if record.starts_with("  ") || record.trim().is_empty() {
                continue;
            }
            let (id, synset) = parse_record(record, line).map_err(|r| invalid(path, line, r))?;
            if let Some(first) = synsets.insert(id, synset) {
                return Err(invalid(
                    path,
                    line,
                    format!("{id} already defined on line {}", first.line),
                ));
            }
        }
        if synsets.is_empty() {
            return Err(invalid(path, 1, "no synsets: is this WordNet's data.noun?"));
        }
        // A dangling pointer means a truncated or mixed-up file.
        for (id, synset) in &synsets {
            if let Some(missing) = synset.hypernyms.iter().find(|h| !synsets.contains_key(h)) {
                return Err(invalid(
                    path,
                    synset.line,
                    format!("{id} has hypernym {missing}, which is not in the file"),
                ));
            }
        }
        Ok(WordNet { synsets })
    }

    pub fn synset(&self, id: Wnid) -> Option<&Synset> {
        self.synsets.get(&id)
    }

    /// Every synset, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Wnid, &Synset)> {
        self.synsets.iter().map(|(id, s)| (*id, s))
    }

    pub fn len(&self) -> usize {
        self.synsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.synsets.is_empty()
    }

    /// `id` and every synset above it (transitive hypernyms, through all
    /// parents: WordNet has multiple inheritance, e.g. dog is both canine and
    /// domestic animal).
    pub fn ancestors(&self, id: Wnid) -> HashSet<Wnid> {
        let mut seen = HashSet::new();
        let mut todo = vec![id];
        while let Some(next) = todo.pop() {
            if seen.insert(next) {
                if let Some(synset) = self.synsets.get(&next) {
                    todo.extend(&synset.hypernyms);
                }
            }
        }
        seen
    }
}

/// One data.noun record:
/// `offset lex_filenum ss_type w_cnt [word lex_id]... p_cnt [symbol offset pos source/target]... | gloss`.
fn parse_record(record: &str, line: usize) -> Result<(Wnid, Synset), String> {
    let fields = record
        .split_once('|')
        .map_or(record, |(fields, _gloss)| fields);
    let mut tokens = fields.split_ascii_whitespace();
    let mut next = |what: &str| {
        tokens
            .next()
            .ok_or_else(|| format!("record ends before its {what}"))
    };

    let offset = next("offset")?;
    let id: Wnid = format!("n{offset}").parse()?;
    next("lexicographer file number")?;
    let ss_type = next("synset type")?;
    if ss_type != "n" {
        return Err(format!(
            "synset type `{ss_type}`, expected `n` (this is the noun file)"
        ));
    }
    let w_cnt = next("word count")?;
    let w_cnt = usize::from_str_radix(w_cnt, 16)
        .map_err(|_| format!("word count `{w_cnt}` is not hexadecimal"))?;
    let mut lemmas = Vec::with_capacity(w_cnt);
    for _ in 0..w_cnt {
        lemmas.push(next("words")?.to_owned());
        next("lex_id")?;
    }
    let p_cnt = next("pointer count")?;
    let p_cnt: usize = p_cnt
        .parse()
        .map_err(|_| format!("pointer count `{p_cnt}` is not a number"))?;
    let mut hypernyms = Vec::new();
    for _ in 0..p_cnt {
        let symbol = next("pointer symbol")?;
        let target = next("pointer offset")?;
        let pos = next("pointer part of speech")?;
        next("pointer source/target")?;
        if matches!(symbol, "@" | "@i") && pos == "n" {
            hypernyms.push(format!("n{target}").parse()?);
        }
    }
    if let Ok(extra) = next("gloss") {
        return Err(format!("unexpected `{extra}` after {p_cnt} pointers"));
    }
    Ok((
        id,
        Synset {
            lemmas,
            hypernyms,
            line,
        },
    ))
}

/// A synset named in the vocabulary, `lemma:wnid` (or a bare wnid).
#[derive(Debug, Clone, PartialEq)]
pub struct SynsetRef {
    pub lemma: Option<String>,
    pub wnid: Wnid,
    /// Line in the vocabulary file.
    pub line: usize,
}

/// One broad concept as the vocabulary states it.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabularyConcept {
    /// The TOML key.
    pub key: String,
    /// What the API returns: `name`, or the key with `_` as spaces.
    pub name: String,
    pub synsets: Vec<SynsetRef>,
    pub exclude: Vec<SynsetRef>,
    /// Line of the key in the vocabulary file.
    pub line: usize,
}

/// `data/concepts.toml`, parsed; concepts keep the file's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    pub path: PathBuf,
    pub concepts: Vec<VocabularyConcept>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVocabulary {
    concepts: HashMap<Spanned<String>, Spanned<RawConcept>>,
}

/// `key = [..]` or `key.synsets = [..]` with optional `exclude` and `name`.
struct RawConcept {
    name: Option<String>,
    synsets: Vec<Spanned<String>>,
    exclude: Vec<Spanned<String>>,
}

// Hand-written rather than `#[serde(untagged)]`: untagged buffers its input,
// which loses the spans that let errors point at a line.
impl<'de> Deserialize<'de> for RawConcept {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = RawConcept;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of `lemma:wnid` synsets, or a table with `synsets`, `exclude` and `name`")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawConcept, A::Error> {
                let mut synsets = Vec::new();
                while let Some(synset) = seq.next_element()? {
                    synsets.push(synset);
                }
                Ok(RawConcept {
                    name: None,
                    synsets,
                    exclude: Vec::new(),
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawConcept, A::Error> {
                const FIELDS: &[&str] = &["synsets", "exclude", "name"];
                let (mut name, mut synsets, mut exclude) = (None, None, Vec::new());
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "synsets" => synsets = Some(map.next_value()?),
                        "exclude" => exclude = map.next_value()?,
                        "name" => name = Some(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, FIELDS)),
                    }
                }
                let synsets = synsets.ok_or_else(|| de::Error::missing_field("synsets"))?;
                Ok(RawConcept {
                    name,
                    synsets,
                    exclude,
                })
            }
        }
        deserializer.deserialize_any(RawVisitor)
    }
}

impl Vocabulary {
    pub fn load(path: &Path) -> Result<Self> {
        Self::parse(&read(path)?, path)
    }

    /// Parses vocabulary text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw: RawVocabulary = toml::from_str(text).map_err(|source| WordnetError::Toml {
            path: path.to_path_buf(),
            source,
        })?;
        let line_at = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let refs = |list: Vec<Spanned<String>>| -> Result<Vec<SynsetRef>> {
            list.into_iter()
                .map(|item| {
                    let line = line_at(item.span().start);
                    let text = item.into_inner();
                    let (lemma, wnid) = match text.rsplit_once(':') {
                        Some((lemma, wnid)) => (Some(lemma.trim().to_owned()), wnid.trim()),
                        None => (None, text.trim()),
                    };
                    let wnid = wnid.parse().map_err(|e| invalid(path, line, e))?;
                    Ok(SynsetRef { lemma, wnid, line })
                })
                .collect()
        };
        let mut entries: Vec<_> = raw.concepts.into_iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut concepts = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let line = line_at(key.span().start);
            let key = key.into_inner();
            let raw = value.into_inner();
            let name = raw.name.unwrap_or_else(|| key.replace('_', " "));
            if raw.synsets.is_empty() {
                return Err(invalid(
                    path,
                    line,
                    format!("concept `{key}` names no synset"),
                ));
            }
            concepts.push(VocabularyConcept {
                synsets: refs(raw.synsets)?,
                exclude: refs(raw.exclude)?,
                key,
                name,
                line,
            });
        }
        Ok(Vocabulary {
            path: path.to_path_buf(),
            concepts,
        })
    }
}

/// The classifier's classes: readable labels and WordNet ids, by class index.
#[derive(Debug, Clone, PartialEq)]
pub struct Classes {
    pub labels: Vec<String>,
    pub wnids: Vec<Wnid>,
}

impl Classes {
    /// Reads `imagenet1k_clean_names.json` (a list of names) and
    /// `imagenet1k_to_21k.json` (`{"0": "n01440764", ...}`).
    pub fn load(names_json: &Path, to_wnid_json: &Path) -> Result<Self> {
        let classes_err = |path: &Path, reason: String| WordnetError::Classes {
            path: path.to_path_buf(),
            reason,
        };
        let labels: Vec<String> =
            serde_json::from_str(&read(names_json)?).map_err(json(names_json))?;
        if labels.is_empty() {
            return Err(classes_err(names_json, "no class names".into()));
        }
        let by_index: HashMap<String, String> =
            serde_json::from_str(&read(to_wnid_json)?).map_err(json(to_wnid_json))?;
        if by_index.len() != labels.len() {
            let reason = format!(
                "{} WordNet ids, but {} has {} names",
                by_index.len(),
                names_json.display(),
                labels.len()
            );
            return Err(classes_err(to_wnid_json, reason));
        }
        let mut wnids = vec![None; labels.len()];
        for (index, wnid) in by_index {
            let at = index
                .parse::<usize>()
                .ok()
                .filter(|&i| i < labels.len())
                .ok_or_else(|| {
                    classes_err(
                        to_wnid_json,
                        format!("key `{index}` is not a class index below {}", labels.len()),
                    )
                })?;
            let wnid = wnid
                .parse()
                .map_err(|e| classes_err(to_wnid_json, format!("class {index}: {e}")))?;
            wnids[at] = Some(wnid);
        }
        // Keys are distinct and in range, and as many as the labels: all present.
        let wnids = wnids.into_iter().flatten().collect();
        Ok(Classes { labels, wnids })
    }
}

/// For each vocabulary concept, the sorted class indices under it. Checks
/// every synset against WordNet (it exists, its lemma matches), and refuses
/// a concept that covers no class, an `exclude` that removes nothing and two
/// concepts with one name.
pub fn roll_up(
    wordnet: &WordNet,
    class_wnids: &[Wnid],
    vocabulary: &Vocabulary,
) -> Result<Vec<BroadConcept>> {
    let path = vocabulary.path.as_path();
    let check = |r: &SynsetRef| -> Result<()> {
        let synset = wordnet.synset(r.wnid).ok_or_else(|| {
            invalid(
                path,
                r.line,
                format!("{} is not a noun synset of WordNet 3.0", r.wnid),
            )
        })?;
        match &r.lemma {
            Some(lemma) if !synset.has_lemma(lemma) => {
                let reason = format!(
                    "{} is {{{}}}, not `{lemma}`",
                    r.wnid,
                    synset.lemmas.join(", ")
                );
                Err(invalid(path, r.line, reason))
            }
            _ => Ok(()),
        }
    };
    let ancestors: Vec<HashSet<Wnid>> = class_wnids.iter().map(|&w| wordnet.ancestors(w)).collect();
    let under =
        |refs: &[SynsetRef], class: usize| refs.iter().any(|r| ancestors[class].contains(&r.wnid));

    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut concepts = Vec::with_capacity(vocabulary.concepts.len());
    for concept in &vocabulary.concepts {
        if let Some(first) = names.insert(&concept.name, concept.line) {
            let reason = format!(
                "concept name `{}` is already used on line {first}",
                concept.name
            );
            return Err(invalid(path, concept.line, reason));
        }
        concept
            .synsets
            .iter()
            .chain(&concept.exclude)
            .try_for_each(check)?;
        let included: Vec<usize> = (0..class_wnids.len())
            .filter(|&c| under(&concept.synsets, c))
            .collect();
        for r in &concept.exclude {
            if !included.iter().any(|&c| ancestors[c].contains(&r.wnid)) {
                let reason = format!(
                    "`exclude` {} removes no class from `{}`",
                    r.wnid, concept.key
                );
                return Err(invalid(path, r.line, reason));
            }
        }
        let classes: Vec<usize> = included
            .into_iter()
            .filter(|&c| !under(&concept.exclude, c))
            .collect();
        if classes.is_empty() {
            let reason = format!("concept `{}` covers no ImageNet class", concept.key);
            return Err(invalid(path, concept.line, reason));
        }
        concepts.push(BroadConcept {
            name: concept.name.clone(),
            synsets: concept.synsets.iter().map(|r| r.wnid.to_string()).collect(),
            classes,
        });
    }
    Ok(concepts)
}

/// Builds `concepts.json`'s map from the ImageNet class lists, WordNet's
/// data.noun and the vocabulary of broad concepts.
pub fn build_concepts(
    names_json: &Path,
    to_wnid_json: &Path,
    data_noun: &Path,
    vocabulary_toml: &Path,
) -> Result<ConceptMap> {
    let classes = Classes::load(names_json, to_wnid_json)?;
    let wordnet = WordNet::load(data_noun)?;
    if let Some((index, wnid)) = classes
        .wnids
        .iter()
        .enumerate()
        .find(|(_, w)| wordnet.synset(**w).is_none())
    {
        let reason = format!(
            "class {index} is {wnid}, which {} does not define",
            data_noun.display()
        );
        return Err(WordnetError::Classes {
            path: to_wnid_json.to_path_buf(),
            reason,
        });
    }
    let vocabulary = Vocabulary::load(vocabulary_toml)?;
    let concepts = roll_up(&wordnet, &classes.wnids, &vocabulary)?;
    let wnids = classes.wnids.iter().map(Wnid::to_string).collect();
    Ok(ConceptMap::new(classes.labels, wnids, concepts)?)
}
