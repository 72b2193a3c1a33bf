//! A search request: the parameters of `GET /v1/search`, checked once, and
//! the opaque cursor that continues it.

use base64::Engine as _;
use domain::photo::Status;

use crate::SearchError;

/// Results per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 20;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 100;

/// The photo's shape, from its size after EXIF orientation (`r` = width /
/// height): `panorama` r ≥ 2, `widescreen` 1.6 ≤ r < 2 (16:10, 16:9),
/// `landscape` 1.05 < r < 1.6 (4:3, 3:2), `square` 0.95 ≤ r ≤ 1.05,
/// `portrait` r < 0.95.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Orientation {
    Portrait,
    Landscape,
    Square,
    Widescreen,
    Panorama,
}

impl Orientation {
    pub const ALL: [Orientation; 5] = [
        Orientation::Portrait,
        Orientation::Landscape,
        Orientation::Square,
        Orientation::Widescreen,
        Orientation::Panorama,
    ];

    pub fn of(width: u32, height: u32) -> Orientation {
        let r = width as f64 / height.max(1) as f64;
        if r >= 2.0 {
            Orientation::Panorama
        } else if r >= 1.6 {
            Orientation::Widescreen
        } else if r > 1.05 {
            Orientation::Landscape
        } else if r >= 0.95 {
            Orientation::Square
        } else {
            Orientation::Portrait
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Orientation::Portrait => "portrait",
            Orientation::Landscape => "landscape",
            Orientation::Square => "square",
            Orientation::Widescreen => "widescreen",
            Orientation::Panorama => "panorama",
        }
    }
}

/// The photo's size in megapixels (width × height after orientation):
/// `small` under 1 MP, `medium` 1 to 4 MP, `large` 4 MP and over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SizeClass {
    Small,
    Medium,
    Large,
}

impl SizeClass {
    pub const ALL: [SizeClass; 3] = [SizeClass::Small, SizeClass::Medium, SizeClass::Large];

    pub fn of(width: u32, height: u32) -> SizeClass {
        let pixels = width as u64 * height as u64;
        if pixels < 1_000_000 {
            SizeClass::Small
        } else if pixels < 4_000_000 {
            SizeClass::Medium
        } else {
            SizeClass::Large
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SizeClass::Small => "small",
            SizeClass::Medium => "medium",
            SizeClass::Large => "large",
        }
    }
}

/// The order of the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sort {
    /// Best score first (the default with `q` or a similar photo).
    Relevance,
    /// Latest upload first (the default otherwise).
    Newest,
    /// Best technical quality first.
    Quality,
    /// Most liked first: likes and picks (a pick counts 2), each halving
    /// in weight every 14 days (`domain::feedback::Popularity`).
    Popular,
    /// Most likely liked first: `user`'s personal aesthetic head over each
    /// photo's embedding, or the global head without `user`.
    Aesthetic,
}

impl Sort {
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Relevance => "relevance",
            Sort::Newest => "newest",
            Sort::Quality => "quality",
            Sort::Popular => "popular",
            Sort::Aesthetic => "aesthetic",
        }
    }
}

/// A checked search request. Filters combine with AND; the values of one
/// repeatable filter (`orientation`, `size`, `status`) with OR.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    /// Free text; empty: no text condition.
    pub text: String,
    /// Find photos like this stored one.
    pub similar_to: Option<String>,
    /// Concepts the photo must all have (at their accept thresholds).
    pub concepts: Vec<String>,
    /// Any of these; empty: any.
    pub orientations: Vec<Orientation>,
    pub sizes: Vec<SizeClass>,
    /// Any of these; empty means `published`.
    pub statuses: Vec<Status>,
    pub uploader: Option<String>,
    /// Uploaded at or after, Unix ms.
    pub from_ms: Option<i64>,
    /// Uploaded before, Unix ms (a date-only `to` includes that whole day).
    pub to_ms: Option<i64>,
    /// `None`: relevance with text or a similar photo, else newest.
    pub sort: Option<Sort>,
    /// `None`: the default cut for the query's kind.
    pub min_score: Option<f32>,
    pub limit: usize,
    pub cursor: Option<String>,
    /// Whose taste `sort=aesthetic` ranks by (none: the global head's).
    pub user: Option<String>,
}

impl Query {
    /// Parses the query string's pairs (repeated keys allowed). Unknown
    /// parameters and bad values are refused with the parameter named.
    pub fn parse(pairs: &[(String, String)]) -> Result<Query, SearchError> {
        let mut q = Query {
            limit: DEFAULT_LIMIT,
            ..Query::default()
        };
        for (key, value) in pairs {
            let value = value.trim();
            let bad = |allowed: &str| SearchError::InvalidParameter {
                name: key.clone(),
                value: value.to_string(),
                expected: allowed.to_string(),
            };
            match key.as_str() {
                "q" => {
                    if !q.text.is_empty() {
                        q.text.push(' ');
                    }
                    q.text.push_str(value);
                }
                "similarTo" => {
                    let ok = value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit());
                    if !ok {
                        return Err(bad("a photo id (64 hex digits)"));
                    }
                    q.similar_to = Some(value.to_ascii_lowercase());
                }
                "concept" => {
                    for name in split_list(value) {
                        q.concepts.push(name.to_lowercase());
                    }
                }
                "orientation" => {
                    for v in split_list(value) {
                        let o = Orientation::ALL.into_iter().find(|o| o.as_str() == v);
                        q.orientations.push(
                            o.ok_or_else(|| bad(&names(Orientation::ALL.map(|o| o.as_str()))))?,
                        );
                    }
                }
                "size" => {
                    for v in split_list(value) {
                        let s = SizeClass::ALL.into_iter().find(|s| s.as_str() == v);
                        q.sizes.push(
                            s.ok_or_else(|| bad(&names(SizeClass::ALL.map(|s| s.as_str()))))?,
                        );
                    }
                }
                "status" => {
                    for v in split_list(value) {
                        q.statuses.push(
                            Status::parse(v)
                                .ok_or_else(|| bad(&names(Status::ALL.map(|s| s.as_str()))))?,
                        );
                    }
                }
                "uploader" => q.uploader = Some(value.to_string()).filter(|v| !v.is_empty()),
                "from" => q.from_ms = Some(parse_time(value, false).ok_or_else(|| bad(DATES))?),
                "to" => q.to_ms = Some(parse_time(value, true).ok_or_else(|| bad(DATES))?),
                "sort" => {
                    q.sort = Some(match value {
                        "relevance" => Sort::Relevance,
                        "newest" => Sort::Newest,
                        "quality" => Sort::Quality,
                        "popular" => Sort::Popular,
                        "aesthetic" => Sort::Aesthetic,
                        _ => return Err(bad("relevance, newest, quality, popular, aesthetic")),
                    })
                }
                "minScore" => {
                    let v: f32 = value.parse().map_err(|_| bad("a number from 0 to 1"))?;
                    if !(0.0..=1.0).contains(&v) {
                        return Err(bad("a number from 0 to 1"));
                    }
                    q.min_score = Some(v);
                }
                "limit" => {
                    let expected = format!("1 to {MAX_LIMIT}");
                    let v: usize = value.parse().map_err(|_| bad(&expected))?;
                    if !(1..=MAX_LIMIT).contains(&v) {
                        return Err(bad(&expected));
                    }
                    q.limit = v;
                }
                "cursor" => q.cursor = Some(value.to_string()).filter(|v| !v.is_empty()),
                "user" => {
                    if !domain::feedback::valid_user_id(value) {
                        return Err(bad("a user id: 1 to 64 of A-Z a-z 0-9 . _ - @"));
                    }
                    q.user = Some(value.to_string());
                }
                _ => {
                    return Err(SearchError::UnknownParameter {
                        name: key.clone(),
                        known: KNOWN.join(", "),
                    })
                }
            }
        }
        q.text = q.text.trim().to_string();
        if let (Some(from), Some(to)) = (q.from_ms, q.to_ms) {
            if from >= to {
                return Err(SearchError::InvalidParameter {
                    name: "to".into(),
                    value: format!("{to} ms"),
                    expected: "a time after `from`".into(),
                });
            }
        }
        Ok(q)
    }

    /// The order in force: relevance when ranked (text, a similar photo by
    /// id, or one sent in the body), else newest.
    pub fn sort_for(&self, ranked: bool) -> Sort {
        self.sort.unwrap_or(if ranked || self.is_ranked() {
            Sort::Relevance
        } else {
            Sort::Newest
        })
    }

    /// Whether results carry a score (text or a similar photo).
    pub fn is_ranked(&self) -> bool {
        !self.text.is_empty() || self.similar_to.is_some()
    }

    /// A hash of everything but the cursor and the limit: a cursor is only
    /// good for the query that gave it out.
    pub(crate) fn fingerprint(&self, similar: bool) -> u64 {
        let text = format!(
            "{}|{:?}|{similar}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.text,
            self.similar_to,
            self.concepts,
            self.orientations,
            self.sizes,
            self.statuses,
            self.uploader,
            self.from_ms,
            self.to_ms,
            self.sort_for(similar),
            self.min_score.map(f32::to_bits),
            self.user,
        );
        // FNV-1a: stable across processes and versions (a replica may answer
        // the next page).
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })
    }
}

const KNOWN: [&str; 14] = [
    "q",
    "similarTo",
    "concept",
    "orientation",
    "size",
    "status",
    "uploader",
    "from",
    "to",
    "sort",
    "minScore",
    "limit",
    "cursor",
    "user",
];

const DATES: &str = "a date (2026-11-30), a UTC time (2026-11-30T18:00:00Z) or Unix milliseconds";

fn names<const N: usize>(all: [&str; N]) -> String {
    all.join(", ")
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

/// `YYYY-MM-DD` (the day's start, or with `end_of_day` the next day's
/// start), `YYYY-MM-DDTHH:MM:SS[.fff]Z`, or Unix milliseconds.
fn parse_time(value: &str, end_of_day: bool) -> Option<i64> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok();
    }
    let (date, time) = match value.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (value, None),
    };
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let day_ms = days_from_civil(y, m, d) * 86_400_000;
    let Some(time) = time else {
        return Some(day_ms + if end_of_day { 86_400_000 } else { 0 });
    };
    let time = time.strip_suffix('Z')?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = hms.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let min: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next().map_or(Some(0), |s| s.parse().ok())?;
    if hms.next().is_some() || h > 23 || min > 59 || s > 60 {
        return None;
    }
    let ms = match frac.len() {
        0 => 0,
        1..=3 => frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32),
        _ => frac[..3].parse().ok()?,
    };
    Some(day_ms + ((h * 60 + min) * 60 + s) * 1000 + ms)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Where the next page starts: after the result with this sort key and
/// seq, for the query with this fingerprint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cursor {
    pub fingerprint: u64,
    pub key: f64,
    pub seq: i64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "s1:{:016x}:{}:{}",
            self.fingerprint,
            self.key.to_bits(),
            self.seq
        ))
    }

    pub fn decode(text: &str, fingerprint: u64) -> Result<Cursor, SearchError> {
        let invalid = || SearchError::InvalidCursor {
            cursor: text.to_string(),
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| invalid())?;
        let raw = String::from_utf8(raw).map_err(|_| invalid())?;
        let mut parts = raw.strip_prefix("s1:").ok_or_else(invalid)?.split(':');
        let print =
            u64::from_str_radix(parts.next().ok_or_else(invalid)?, 16).map_err(|_| invalid())?;
        let key = parts
            .next()
            .and_then(|k| k.parse::<u64>().ok())
            .map(f64::from_bits)
            .ok_or_else(invalid)?;
        let seq = parts
            .next()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(invalid)?;
        if parts.next().is_some() || print != fingerprint {
            return Err(invalid());
        }
        Ok(Cursor {
            fingerprint,
            key,
            seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn shapes_and_sizes_follow_the_documented_cuts() {
        assert_eq!(Orientation::of(3000, 1000), Orientation::Panorama);
        assert_eq!(Orientation::of(1920, 1080), Orientation::Widescreen);
        assert_eq!(Orientation::of(1600, 1000), Orientation::Widescreen);
        assert_eq!(Orientation::of(1500, 1000), Orientation::Landscape);
        assert_eq!(Orientation::of(1000, 1000), Orientation::Square);
        assert_eq!(Orientation::of(1040, 1000), Orientation::Square);
        assert_eq!(Orientation::of(2000, 3000), Orientation::Portrait);
        assert_eq!(SizeClass::of(999, 1000), SizeClass::Small);
        assert_eq!(SizeClass::of(1000, 1000), SizeClass::Medium);
        assert_eq!(SizeClass::of(2000, 2000), SizeClass::Large);
    }

    #[test]
    fn parameters_parse_and_bad_ones_are_named() {
        let q = Query::parse(&pairs(&[
            ("q", " happy dog "),
            ("concept", "Sky,sea"),
            ("concept", "boat"),
            ("orientation", "portrait,square"),
            ("size", "large"),
            ("status", "published,needs_review"),
            ("from", "2026-11-01"),
            ("to", "2026-11-30"),
            ("sort", "quality"),
            ("minScore", "0.25"),
            ("limit", "100"),
        ]))
        .unwrap();
        assert_eq!(q.text, "happy dog");
        assert_eq!(q.concepts, ["sky", "sea", "boat"]);
        assert_eq!(q.orientations, [Orientation::Portrait, Orientation::Square]);
        assert_eq!(q.statuses, [Status::Published, Status::NeedsReview]);
        assert_eq!(q.from_ms, Some(day_ms(2026, 11, 1)));
        assert_eq!(q.to_ms, Some(day_ms(2026, 12, 1)));
        assert_eq!(
            (q.sort_for(false), q.min_score, q.limit),
            (Sort::Quality, Some(0.25), 100)
        );

        for (k, v) in [
            ("orientation", "diagonal"),
            ("size", "huge"),
            ("status", "gone"),
            ("sort", "prettiest"),
            ("user", "a b"),
            ("limit", "101"),
            ("limit", "0"),
            ("minScore", "2"),
            ("from", "2026-02-30"),
            ("similarTo", "abc"),
        ] {
            let e = Query::parse(&pairs(&[(k, v)])).unwrap_err();
            assert_eq!(e.code(), "invalid_parameter", "{k}={v}");
            assert!(e.to_string().contains(k), "{e}");
        }
        let e = Query::parse(&pairs(&[("color", "red")])).unwrap_err();
        assert_eq!(e.code(), "unknown_parameter");
        let e = Query::parse(&pairs(&[("from", "2026-11-30"), ("to", "2026-11-01")])).unwrap_err();
        assert_eq!(e.code(), "invalid_parameter");
    }

    fn day_ms(y: i64, m: u32, d: u32) -> i64 {
        days_from_civil(y, m, d) * 86_400_000
    }

    #[test]
    fn times_parse_as_utc() {
        assert_eq!(parse_time("1970-01-02", false), Some(86_400_000));
        assert_eq!(parse_time("1970-01-01", true), Some(86_400_000));
        assert_eq!(
            parse_time("2000-03-01T00:00:01.5Z", false),
            Some(951_868_801_500)
        );
        assert_eq!(parse_time("1700000000000", false), Some(1_700_000_000_000));
        assert_eq!(parse_time("2026-13-01", false), None);
        assert_eq!(parse_time("2026-11-30T25:00:00Z", false), None);
    }

    #[test]
    fn cursors_round_trip_and_belong_to_their_query() {
        let c = Cursor {
            fingerprint: 42,
            key: 0.75,
            seq: 9,
        };
        assert_eq!(Cursor::decode(&c.encode(), 42).unwrap(), c);
        assert!(Cursor::decode(&c.encode(), 43).is_err());
        assert!(Cursor::decode("not-a-cursor", 42).is_err());
    }
}
