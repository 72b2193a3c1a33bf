//! Blob store for photo originals and derived thumbnails: one async API over a
//! local directory (the embedded default) or an S3-compatible server, both
//! through `object_store`, so the two backends share one code path.
//!
//! Keys are slash-separated, lowercase ASCII (`originals/ab/cdef…`,
//! `thumbnails/<id>/<params-hash>.jpg`); [`BlobStore`] refuses any other
//! shape before it touches a backend.

mod config;
mod error;
mod key;
mod store;

pub use config::StorageConfig;
pub use error::StorageError;
pub use key::validate_key;
pub use store::{BlobStore, PART_BYTES};

// The backend checks shared with the S3 integration test (tests/s3.rs): the
// local backend runs the very same sequence here, as a unit test.
#[cfg(test)]
#[path = "../tests/conformance/mod.rs"]
mod conformance;
