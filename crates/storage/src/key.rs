//! Blob key validation: one shape accepted by both backends, checked before
//! any I/O so that a bad key never reaches a file path or a URL.

use crate::StorageError;

/// S3's own limit on a key, in bytes; the local backend is held to it too so
/// that a store can move between backends.
const MAX_KEY_LEN: usize = 1024;

/// Checks that `key` is a blob key: slash-separated segments of ASCII
/// `[a-z0-9._-]`, no empty segment (so no leading, trailing or doubled `/`),
/// no `.` segment and no `..` anywhere, at most 1024 bytes.
///
/// The charset is narrow on purpose: every key is something we generate (hex
/// hashes, ids, fixed prefixes), it needs no escaping in a URL or a file name,
/// it cannot climb out of the local directory, and it reads the same on a
/// case-insensitive file system.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let invalid = |reason: &str| {
        Err(StorageError::InvalidKey {
            key: key.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return invalid("longer than 1024 bytes");
    }
    if let Some(c) = key
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '/' | '.' | '_' | '-'))
    {
        return invalid(&format!(
            "character {c:?} is not allowed (only a-z 0-9 / . _ -)"
        ));
    }
    if key.starts_with('/') {
        return invalid("starts with '/'");
    }
    if key.ends_with('/') {
        return invalid("ends with '/'");
    }
    if key.contains("..") {
        return invalid("contains '..'");
    }
    if key.contains("//") {
        return invalid("has an empty segment ('//')");
    }
    if key.split('/').any(|segment| segment == ".") {
        return invalid("has a '.' segment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_keys_we_generate() {
        for key in [
            "originals/ab/cdef0123456789",
            "thumbnails/42/9f86d081884c7d65.jpg",
            "a",
            "x/.hidden",
            "a-b_c.d/e",
        ] {
            assert!(validate_key(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        let long = "a".repeat(MAX_KEY_LEN + 1);
        for key in [
            "",
            "/originals/ab",
            "originals/",
            "originals//ab",
            "../etc/passwd",
            "originals/../../etc",
            "a..b",
            "./a",
            "a/./b",
            "Originals/ab",
            "originals/a b",
            "originals/a\\b",
            "originals/é",
            "originals/a#1",
            "originals/a?x=1",
            long.as_str(),
        ] {
            let err = validate_key(key).expect_err(key);
            assert_eq!(err.code(), "invalid_key", "{key}");
        }
    }

    #[test]
    fn the_longest_key_is_accepted() {
        assert!(validate_key(&"a".repeat(MAX_KEY_LEN)).is_ok());
    }
}
