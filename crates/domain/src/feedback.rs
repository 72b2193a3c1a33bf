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

/// How fast popularity forgets: a like counts half after this long.
pub const POPULARITY_HALF_LIFE_MS: i64 = 14 * 24 * 3_600_000;
/// The time popularity is kept relative to (2020-01-01T00:00:00Z).
const POPULARITY_EPOCH_MS: i64 = 1_577_836_800_000;

/// What a signal adds to a photo's popularity: a like 1, a pick 2 (someone
/// chose the photo for use), a dislike or a skip nothing.
pub fn popularity_weight(signal: Signal) -> f64 {
    match signal {
        Signal::Like => 1.0,
        Signal::Pick => 2.0,
        Signal::Dislike | Signal::Skip => 0.0,
    }
}

/// A photo's popularity, kept so that it never needs updating as time
/// passes: `log2` of the sum over its current signals of `weight ×
/// 2^((at − epoch) / half-life)`. Every photo decays by the same factor, so
/// this orders photos by popularity at any moment; [`Popularity::at`] reads
/// it as decayed likes at a given time. Taken from the photo's signals
/// every time (the last signal per user counts), never incremented.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Popularity(pub f64);

impl Popularity {
    /// No likes or picks.
    pub const NONE: Popularity = Popularity(f64::NEG_INFINITY);

    pub fn of(signals: impl IntoIterator<Item = (Signal, i64)>) -> Popularity {
        let terms: Vec<(f64, f64)> = signals
            .into_iter()
            .filter_map(|(signal, at_ms)| {
                let w = popularity_weight(signal);
                (w > 0.0).then(|| {
                    let e = (at_ms - POPULARITY_EPOCH_MS) as f64 / POPULARITY_HALF_LIFE_MS as f64;
                    (w.log2(), e)
                })
            })
            .collect();
        let Some(top) = terms.iter().map(|(lw, e)| lw + e).reduce(f64::max) else {
            return Popularity::NONE;
        };
        let sum: f64 = terms.iter().map(|(lw, e)| (lw + e - top).exp2()).sum();
        Popularity(top + sum.log2())
    }

    /// Decayed likes at `now_ms` (a pick counting 2): 0 with none.
    pub fn at(self, now_ms: i64) -> f64 {
        if self.0 == f64::NEG_INFINITY {
            return 0.0;
        }
        let e = (now_ms - POPULARITY_EPOCH_MS) as f64 / POPULARITY_HALF_LIFE_MS as f64;
        (self.0 - e).exp2()
    }
}

/// Fewest signals of each kind (for: like, pick; against: dislike, skip)
/// before a user's personal head is trained. Four of each already rank a
/// consistent taste well above chance (`bench/aesthetics.py`), and
/// cross-validation has four folds to choose the regularisation with.
pub const MIN_SIGNALS: usize = 4;

/// The global head's key among the heads: trained from every user's
/// feedback and reviewers' publish and reject decisions. No user id can be
/// `*`, so it never clashes with a user's own.
pub const GLOBAL_HEAD: &str = "*";

/// A user's personal aesthetic head: a logistic model over one embedding
/// model's vectors, trained from that user's feedback. `score` is the
/// probability that the user would like a photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonalHead {
    pub user: String,
    /// The embedding model whose vectors it scores.
    pub model: String,
    #[serde(skip)]
    pub weights: Vec<f32>,
    #[serde(skip)]
    pub bias: f32,
    pub positives: usize,
    pub negatives: usize,
    /// The latest signal it was trained with (ms since the epoch): a job
    /// for an older state never replaces it.
    pub through_ms: i64,
    pub trained_ms: i64,
    /// Out-of-fold figures of the training.
    pub metrics: learn::Metrics,
}

impl PersonalHead {
    /// `sigmoid(w · e + b)` of one L2-normalised embedding.
    pub fn score(&self, embedding: &[f32]) -> f32 {
        crate::concept::linear_score(&self.weights, self.bias, embedding)
    }
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

    #[test]
    fn popularity_decays_by_half_life_and_orders_at_any_time() {
        let day = 24 * 3_600_000;
        let now = 1_800_000_000_000;
        let fresh = Popularity::of([(Signal::Like, now), (Signal::Skip, now)]);
        assert!((fresh.at(now) - 1.0).abs() < 1e-9);
        assert!((fresh.at(now + 14 * day) - 0.5).abs() < 1e-9);
        let picked_long_ago = Popularity::of([(Signal::Pick, now - 28 * day)]);
        assert!((picked_long_ago.at(now) - 0.5).abs() < 1e-9);
        let both = Popularity::of([(Signal::Like, now), (Signal::Pick, now - 28 * day)]);
        assert!((both.at(now) - 1.5).abs() < 1e-9);
        assert!(both.0 > fresh.0 && fresh.0 > picked_long_ago.0);
        assert_eq!(Popularity::of([(Signal::Dislike, now)]), Popularity::NONE);
        assert_eq!(Popularity::NONE.at(now), 0.0);
        // Centuries on, still finite: kept as a logarithm.
        let far = Popularity::of([(Signal::Like, now + 300 * 365 * day)]);
        assert!(far.0.is_finite() && (far.at(now + 300 * 365 * day) - 1.0).abs() < 1e-6);
    }
}
