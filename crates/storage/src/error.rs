//! The crate's one error type and its stable codes; the HTTP layer maps each
//! code to a status once, at the edge.

/// Everything a [`crate::BlobStore`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The key is not one this store accepts (see [`crate::validate_key`]).
    /// A caller bug or bad input: never retried.
    #[error("invalid blob key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },

    /// The S3 server could not be reached or answered with an error, after
    /// the client's bounded retries. Transient from the caller's point of
    /// view: the service answers 503.
    #[error("blob storage unavailable: {reason}")]
    Unavailable { reason: String },

    /// The local directory could not be read or written (disk full,
    /// permissions, a key whose parent is already a file, …).
    #[error("blob storage error: {reason}")]
    Io { reason: String },

    /// The configuration cannot work (a missing credential half, an `http://`
    /// endpoint without `allow_http`, a directory that cannot be created).
    /// Raised only by [`crate::BlobStore::open`], so start-up fails early.
    #[error("invalid storage configuration: {reason}")]
    Config { reason: String },
}

impl StorageError {
    /// Stable snake_case code for logs and JSON error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::InvalidKey { .. } => "invalid_key",
            StorageError::Unavailable { .. } => "storage_unavailable",
            StorageError::Io { .. } => "storage_error",
            StorageError::Config { .. } => "storage_config_invalid",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let reason = String::from("r");
        let cases = [
            (
                StorageError::InvalidKey {
                    key: "k".into(),
                    reason: reason.clone(),
                },
                "invalid_key",
            ),
            (
                StorageError::Unavailable {
                    reason: reason.clone(),
                },
                "storage_unavailable",
            ),
            (
                StorageError::Io {
                    reason: reason.clone(),
                },
                "storage_error",
            ),
            (StorageError::Config { reason }, "storage_config_invalid"),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
        }
    }
}
