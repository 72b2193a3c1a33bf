//! [`Doc`]: a photo as the catalogue takes it — its facts and its terms
//! (concepts, kept keywords, caption words) with their scores — made from
//! a stored record.

use std::collections::HashMap;

use domain::photo::{PhotoRecord, Status};

/// Where a term of a photo came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TermKind {
    /// From the analysis (built-in, stock and trained concepts).
    Concept = 0,
    /// A search keyword the review kept that no concept gave.
    Keyword = 1,
    /// A word of a caption.
    Caption = 2,
}

/// A photo as the catalogue takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub id: String,
    pub seq: i64,
    pub created_ms: i64,
    pub status: Status,
    pub uploader: Option<String>,
    /// After EXIF orientation.
    pub width: u32,
    pub height: u32,
    pub quality: Option<f32>,
    /// Its popularity from people's likes and picks, as the logarithm
    /// `domain::feedback::Popularity` keeps (`-inf`: none); comes from the
    /// feedback store, not the record.
    pub popular: f32,
    /// `(term, score, kind)`.
    pub terms: Vec<(String, f32, TermKind)>,
}

/// Words of a caption that say nothing on their own.
const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "of", "with", "and", "in", "on", "at", "to", "for", "by", "from", "having",
    "is", "or", "its", "it", "this", "that", "some", "into", "near", "as",
];

pub fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.contains(&word)
}

impl Doc {
    /// The searchable facts of a stored photo.
    pub fn from_record(record: &PhotoRecord) -> Doc {
        let mut terms = Terms::default();
        let (width, height, quality) = match &record.analysis {
            Some(a) => {
                for (name, score) in &a.concepts {
                    terms.add(name, *score, TermKind::Concept);
                }
                (a.size[0], a.size[1], a.quality)
            }
            None => (record.original.width, record.original.height, None),
        };
        // A kept concept keeps its confidence; a reviewer's own word is
        // taken as certain.
        for keyword in &record.keywords {
            if !terms.has(keyword) {
                terms.add(keyword, 1.0, TermKind::Keyword);
            }
        }
        if let Some(a) = &record.analysis {
            for caption in &a.captions {
                for word in words(&caption.caption) {
                    if !is_stop_word(&word) {
                        terms.add(&word, caption.probability, TermKind::Caption);
                    }
                }
            }
        }
        let terms = terms.list;
        Doc {
            id: record.id.clone(),
            seq: record.seq,
            created_ms: record.created_ms,
            status: record.status,
            uploader: record.submission.uploader.id.clone(),
            width,
            height,
            quality,
            popular: f32::NEG_INFINITY,
            terms,
        }
    }
}

/// A photo's terms while they are gathered: one entry per lowercased
/// name, at its best score.
#[derive(Default)]
struct Terms {
    list: Vec<(String, f32, TermKind)>,
    seen: HashMap<String, usize>,
}

impl Terms {
    fn has(&self, name: &str) -> bool {
        self.seen.contains_key(&name.trim().to_lowercase())
    }

    fn add(&mut self, name: &str, score: f32, kind: TermKind) {
        let key = name.trim().to_lowercase();
        if key.is_empty() {
            return;
        }
        match self.seen.get(&key) {
            Some(&i) => self.list[i].1 = self.list[i].1.max(score),
            None => {
                self.seen.insert(key, self.list.len());
                self.list.push((name.trim().to_string(), score, kind));
            }
        }
    }
}

/// Lowercased words: letters, digits, `-` and `'` inside a word.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '\''))
        .map(|w| w.trim_matches(|c| c == '-' || c == '\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}
