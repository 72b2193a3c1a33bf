//! Opaque page cursors: URL-safe base64 of `prefix:n1:n2…` (non-negative
//! integers). A cursor that is not one of ours is 400 `invalid_cursor`.

use base64::Engine;

use crate::error::ApiError;

pub(crate) fn encode<const N: usize>(prefix: &str, parts: [i64; N]) -> String {
    let mut text = prefix.to_string();
    for p in parts {
        text.push(':');
        text.push_str(&p.to_string());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

pub(crate) fn decode<const N: usize>(
    prefix: &str,
    cursor: Option<&str>,
) -> Result<Option<[i64; N]>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let invalid = || ApiError::InvalidCursor {
        cursor: cursor.to_string(),
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(raw).map_err(|_| invalid())?;
    let mut fields = text.split(':');
    if fields.next() != Some(prefix) {
        return Err(invalid());
    }
    let mut parts = [0i64; N];
    for part in &mut parts {
        *part = fields
            .next()
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(invalid)?;
    }
    match fields.next() {
        None => Ok(Some(parts)),
        Some(_) => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let c = encode("fb", [1_700_000_000_000, 42]);
        assert_eq!(
            decode("fb", Some(&c)).unwrap(),
            Some([1_700_000_000_000, 42])
        );
        assert_eq!(decode::<1>("seq", None).unwrap(), None);
        for bad in [
            "!!!".to_string(),
            "Zm9v".to_string(),
            encode("fb", [1, -1]),
            encode("fb", [1]),
            encode("fb", [1, 2, 3]),
            encode("seq", [1, 2]),
        ] {
            assert_eq!(
                decode::<2>("fb", Some(&bad)).unwrap_err().code(),
                "invalid_cursor",
                "{bad}"
            );
        }
    }
}
