//! Search: by keyword, free text and similar photo, with filters, facets,
//! a visible score and cursors.
//!
//! - [`query`]: the parameters of `GET /v1/search`, checked once; the
//!   documented shape (`orientation`) and size (`size`) classes; cursors.
//! - [`doc`]: a photo as the catalogue takes it, made from a stored record.
//! - [`catalogue`]: every photo's searchable facts in memory, an inverted
//!   index over its terms, the similar-photo index beside it, and the query
//!   itself ([`Catalogue::search`]).
//! - [`text`]: free text → the terms it stands for, through the catalogue's
//!   own terms and WordNet's synonyms, hyponyms and hypernyms.
//! - [`encoder`]: a text encoder for words that are no known term.
//! - [`snapshot`]: the catalogue in one file, so a restart (or a new
//!   replica) loads it instead of rebuilding it.
//! - [`index`]: [`SearchIndex`], the catalogue kept current from the event
//!   log, built from the metadata store when there is no snapshot.
//! - [`trained`]: trained concepts' backfilled scores, taken in.

pub mod catalogue;
pub mod doc;
pub mod encoder;
pub mod index;
pub mod query;
pub mod snapshot;
pub mod text;
pub mod trained;

pub use catalogue::{Catalogue, Doc, Facets, Hit, Page, Personal, TermKind, VectorSearch};
pub use encoder::{TermEncoder, TextEncoder};
pub use index::{SearchIndex, SearchSettings, SnapshotPlace};
pub use query::{Orientation, Query, SizeClass, Sort, DEFAULT_LIMIT, MAX_LIMIT};
pub use text::{Lexicon, Reading};

/// Why a search was not answered. `code()` is the stable API code.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("`{name}` is {value:?}; expected {expected}")]
    InvalidParameter {
        name: String,
        value: String,
        expected: String,
    },
    #[error("unknown parameter `{name}`; known: {known}")]
    UnknownParameter { name: String, known: String },
    #[error("cursor {cursor:?} is not one this search gave out; start without a cursor")]
    InvalidCursor { cursor: String },
    #[error("no photo with id `{id}`")]
    PhotoNotFound { id: String },
    #[error("photo `{id}` has no embedding in the index yet (it is not analysed, or the index is catching up)")]
    NotIndexed { id: String },
    #[error("the search index is loading; retry shortly")]
    NotReady,
    #[error("text encoder: {0}")]
    Encoder(String),
    #[error("metadata store: {0}")]
    Store(String),
    #[error("search index: {0}")]
    Internal(String),
}

impl SearchError {
    pub fn code(&self) -> &'static str {
        match self {
            SearchError::InvalidParameter { .. } => "invalid_parameter",
            SearchError::UnknownParameter { .. } => "unknown_parameter",
            SearchError::InvalidCursor { .. } => "invalid_cursor",
            SearchError::PhotoNotFound { .. } => "photo_not_found",
            SearchError::NotIndexed { .. } => "photo_not_indexed",
            SearchError::NotReady => "search_not_ready",
            SearchError::Encoder(_) => "text_encoder_failed",
            SearchError::Store(_) => "storage_unavailable",
            SearchError::Internal(_) => "internal_error",
        }
    }
}
