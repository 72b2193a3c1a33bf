//! Text → sentence embeddings: a BERT WordPiece tokenizer read from a
//! Hugging Face `tokenizer.json`, and [`TextModel`], which runs a
//! `text_encoder` model (MiniLM-L6) through the same ONNX Runtime backend
//! as the photo models.
//!
//! The tokenizer does what `BertNormalizer` + `BertPreTokenizer` +
//! `WordPiece` do for an uncased model: clean control characters, put
//! spaces around CJK ideographs, lowercase, strip accents (NFD, drop
//! combining marks), split on whitespace and punctuation, then split each
//! word greedily into the longest vocabulary pieces (`##` inside a word);
//! a word with no split, or longer than 100 characters, is `[UNK]`.

use std::collections::HashMap;
use std::path::Path;

use unicode_normalization::UnicodeNormalization;

use crate::backend::{Backend, Tensor};
use crate::error::{ModelError, Result};
use crate::repository::{ModelEntry, ModelKind};

const MAX_WORD_CHARS: usize = 100;

/// A WordPiece vocabulary with BERT's special tokens.
#[derive(Debug, Clone)]
pub struct WordPiece {
    vocab: HashMap<String, u32>,
    unk: u32,
    cls: u32,
    sep: u32,
}

impl WordPiece {
    pub fn load(path: &Path) -> Result<WordPiece> {
        let bad = |reason: String| ModelError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if json["model"]["type"] != "WordPiece" {
            return Err(bad(format!(
                "model.type is {}, not WordPiece",
                json["model"]["type"]
            )));
        }
        let vocab: HashMap<String, u32> = json["model"]["vocab"]
            .as_object()
            .ok_or_else(|| bad("no model.vocab".into()))?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()? as u32)))
            .collect();
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| bad(format!("the vocabulary has no {t}")))
        };
        Ok(WordPiece {
            unk: id("[UNK]")?,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            vocab,
        })
    }

    /// `[CLS] pieces… [SEP]`, at most `max_tokens` in all.
    pub fn encode(&self, text: &str, max_tokens: usize) -> Vec<u32> {
        let mut ids = vec![self.cls];
        let room = max_tokens.saturating_sub(2);
        for word in pre_tokenize(&normalize(text)) {
            ids.extend(self.word_pieces(&word));
            if ids.len() > room {
                break;
            }
        }
        ids.truncate(room + 1);
        ids.push(self.sep);
        ids
    }

    fn word_pieces(&self, word: &str) -> Vec<u32> {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() > MAX_WORD_CHARS {
            return vec![self.unk];
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < chars.len() {
            let mut end = chars.len();
            let mut found = None;
            while start < end {
                let piece: String = chars[start..end].iter().collect();
                let piece = if start > 0 {
                    format!("##{piece}")
                } else {
                    piece
                };
                if let Some(&id) = self.vocab.get(&piece) {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    pieces.push(id);
                    start = end;
                }
                None => return vec![self.unk],
            }
        }
        pieces
    }
}

/// BertNormalizer for an uncased model.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || (c.is_control() && !c.is_whitespace()) {
            continue;
        }
        if is_cjk(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else if c.is_whitespace() {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out.to_lowercase()
        .nfd()
        .filter(|c| !is_combining_mark(*c))
        .collect()
}

/// Whitespace and punctuation split, punctuation kept as its own token.
fn pre_tokenize(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_whitespace() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
        } else if is_punctuation(c) {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            words.push(c.to_string());
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// BERT's punctuation: ASCII symbols, and Unicode punctuation.
fn is_punctuation(c: char) -> bool {
    let u = c as u32;
    (33..=47).contains(&u)
        || (58..=64).contains(&u)
        || (91..=96).contains(&u)
        || (123..=126).contains(&u)
        || matches!(u, 0x2000..=0x206F | 0x3000..=0x303F | 0xFF00..=0xFF0F)
}

fn is_combining_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// A loaded text encoder: tokenizer, limits and the ONNX backend.
pub struct TextModel {
    pub name: String,
    tokenizer: WordPiece,
    max_tokens: usize,
    backend: Box<dyn Backend>,
}

impl TextModel {
    /// Opens a `text_encoder` model's tokenizer and graph (one session).
    pub fn load(entry: &ModelEntry, intra_threads: usize) -> Result<TextModel> {
        let config = &entry.config;
        let spec = match (&config.kind, &config.text_encoder) {
            (ModelKind::TextEncoder, Some(spec)) => spec,
            _ => {
                return Err(ModelError::Config {
                    path: entry.dir.clone(),
                    reason: "not a text_encoder model".into(),
                })
            }
        };
        let tokenizer = WordPiece::load(&entry.path(&spec.tokenizer))?;
        let backend = crate::onnx_runtime::OrtBackend::load(entry, intra_threads, 1)?;
        Ok(TextModel {
            name: config.name.clone(),
            tokenizer,
            max_tokens: spec.max_tokens,
            backend: Box::new(backend),
        })
    }

    /// The token ids of a text, as the model sees them.
    pub fn tokens(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text, self.max_tokens)
    }

    /// L2-normalised embeddings, one per text (padded to the longest).
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.tokens(t)).collect();
        let len = ids.iter().map(Vec::len).max().unwrap_or(2);
        let mut data = vec![0f32; texts.len() * 2 * len];
        for (n, row) in ids.iter().enumerate() {
            let base = n * 2 * len;
            for (i, &id) in row.iter().enumerate() {
                data[base + i] = id as f32;
                data[base + len + i] = 1.0;
            }
        }
        let out = self
            .backend
            .infer(Tensor::new(vec![texts.len(), 2, len], data))?;
        let embedding = out
            .get("embedding")
            .ok_or_else(|| ModelError::Runtime(format!("{}: no `embedding` output", self.name)))?;
        Ok((0..texts.len())
            .map(|i| embedding.item(i).to_vec())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> WordPiece {
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "water", "##front", "at", "dusk", "cafe", ",",
            "un", "##aff", "##able",
        ];
        WordPiece {
            vocab: words
                .iter()
                .enumerate()
                .map(|(i, w)| (w.to_string(), i as u32))
                .collect(),
            unk: 1,
            cls: 2,
            sep: 3,
        }
    }

    #[test]
    fn words_split_into_the_longest_pieces() {
        let v = vocab();
        assert_eq!(v.encode("Waterfront at DUSK", 16), [2, 4, 5, 6, 7, 3]);
        // Accents stripped, punctuation split off, unknown words [UNK].
        assert_eq!(
            v.encode("Café, unaffable zebra", 16),
            [2, 8, 9, 10, 11, 12, 1, 3]
        );
        // Cut to the limit, [SEP] kept.
        assert_eq!(v.encode("water water water water", 4), [2, 4, 4, 3]);
    }
}
