//! What people say about photos: a user's `like`, `dislike`, `pick` or
//! `skip` of one photo. The last signal per user and photo wins. Feedback
//! is what the personal aesthetic heads learn from.

use serde::{Deserialize, Serialize};

/// One signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Like,
    Dislike,
    /// Chosen for use: the strongest positive.
    Pick,
    /// Passed over: a weak negative.
    Skip,
}

impl Signal {
    pub const ALL: [Signal; 4] = [Signal::Like, Signal::Dislike, Signal::Pick, Signal::Skip];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Like => "like",
            Signal::Dislike => "dislike",
            Signal::Pick => "pick",
            Signal::Skip => "skip",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// `like` and `pick` are for the photo; `dislike` and `skip` against.
    pub fn is_positive(self) -> bool {
        matches!(self, Signal::Like | Signal::Pick)
    }
}

/// A user's latest signal on a photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Feedback {
    pub user: String,
    pub photo_id: String,
    pub signal: Signal,
    /// When it was given, ms since the epoch.
    pub at_ms: i64,
}

/// The longest user id accepted.
pub const MAX_USER_ID: usize = 64;

/// A user id is 1 to 64 ASCII letters, digits, `.`, `_`, `-` or `@`.
pub fn valid_user_id(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER_ID
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_user_ids() {
        for s in Signal::ALL {
            assert_eq!(Signal::parse(s.as_str()), Some(s));
        }
        assert_eq!(Signal::parse("love"), None);
        assert!(Signal::Pick.is_positive() && !Signal::Skip.is_positive());
        assert!(valid_user_id("ana.m@example-1"));
        for bad in ["", "a b", "ä", "x/y", &"u".repeat(65)] {
            assert!(!valid_user_id(bad), "{bad:?}");
        }
    }
}
