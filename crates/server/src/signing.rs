//! Signed thumbnail URLs, as imgproxy does them: with signing on, a thumbnail
//! URL carries `sig`, the HMAC-SHA256 of salt ‖ the URL's path and query
//! without `sig`, keyed by one of the configured keys (several are accepted,
//! so keys can be rotated), in unpadded URL-safe base64. Unsigned or tampered
//! URLs are refused before any work.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The keys and salt, decoded from hex once at start-up.
#[derive(Clone, Default)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
    salt: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    /// Never prints the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer {{ {} keys }}", self.keys.len())
    }
}

impl Signer {
    /// `keys` and `salt` in hex; no keys means signing is off.
    pub fn new(keys: &[String], salt: &str) -> Result<Signer, String> {
        let keys = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let key = hex::decode(k.trim())
                    .map_err(|e| format!("thumbnails.signing_keys[{i}] is not hex: {e}"))?;
                if key.len() < 16 {
                    return Err(format!(
                        "thumbnails.signing_keys[{i}] has {} bytes; use at least 16",
                        key.len()
                    ));
                }
                Ok(key)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let salt = hex::decode(salt.trim())
            .map_err(|e| format!("thumbnails.signing_salt is not hex: {e}"))?;
        Ok(Signer { keys, salt })
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The signature of `path_and_query` (which must not contain `sig`) with
    /// the first (current) key.
    pub fn sign(&self, path_and_query: &str) -> Option<String> {
        let key = self.keys.first()?;
        let signature = self.mac(key, path_and_query).finalize().into_bytes();
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature))
    }

    /// Checks a URL's `sig` against every key, in constant time per key.
    pub fn verify(&self, path_and_query: &str, signature: &str) -> bool {
        let Ok(given) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        self.keys
            .iter()
            .any(|key| self.mac(key, path_and_query).verify_slice(&given).is_ok())
    }

    /// The HMAC of salt ‖ `path_and_query` under `key`, not yet finalised.
    fn mac(&self, key: &[u8], path_and_query: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(&self.salt);
        mac.update(path_and_query.as_bytes());
        mac
    }
}

/// The path and query of a URL with its `sig` parameter removed, the other
/// parameters kept in order: what was signed.
pub fn unsigned_target(path: &str, query: Option<&str>) -> (String, Option<String>) {
    let mut signature = None;
    let rest: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| match p.strip_prefix("sig=") {
            Some(sig) => {
                signature = Some(sig.to_string());
                false
            }
            None => true,
        })
        .collect();
    let target = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    (target, signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "00112233445566778899aabbccddeeff";
    const KEY_B: &str = "ffeeddccbbaa99887766554433221100";

    #[test]
    fn signatures_verify_with_any_configured_key_and_fail_when_tampered() {
        let old = Signer::new(&[KEY_B.into()], "abcd").unwrap();
        let rotated = Signer::new(&[KEY_A.into(), KEY_B.into()], "abcd").unwrap();
        let url = "/v1/photos/ab12/thumbnail?w=256&h=256";
        let sig = old.sign(url).unwrap();
        assert!(
            rotated.verify(url, &sig),
            "an old key still verifies after rotation"
        );
        assert!(!rotated.verify("/v1/photos/ab12/thumbnail?w=257&h=256", &sig));
        assert!(!rotated.verify(url, "not-a-signature"));
        let other_salt = Signer::new(&[KEY_B.into()], "abce").unwrap();
        assert!(!other_salt.verify(url, &sig));
    }

    #[test]
    fn the_sig_parameter_is_removed_before_verifying() {
        let (target, sig) = unsigned_target("/p", Some("w=1&sig=XYZ&h=2"));
        assert_eq!(target, "/p?w=1&h=2");
        assert_eq!(sig.as_deref(), Some("XYZ"));
        assert_eq!(unsigned_target("/p", None), ("/p".to_string(), None));
    }

    #[test]
    fn bad_keys_are_refused_at_start_up() {
        assert!(Signer::new(&["zz".into()], "").is_err());
        assert!(Signer::new(&["0011".into()], "").is_err(), "too short");
        assert!(!Signer::new(&[], "").unwrap().enabled());
    }
}
