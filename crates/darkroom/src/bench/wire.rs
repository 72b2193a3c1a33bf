//! What `darkroom bench` sends and reads: request bodies built once from a
//! photo folder, responses classified into outcomes, and the batch-size
//! histogram out of the server's Prometheus text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use serde::Serialize;

const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// A photo read from disk, its bytes base64-encoded once.
pub struct Photo {
    pub stem: String,
    pub data: String,
}

/// The photos directly inside `dir` (subfolders are not searched), sorted by
/// name, read and base64-encoded. The tool never decodes them: the server does.
pub fn load_photos(dir: &Path) -> anyhow::Result<Vec<Photo>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the photo folder {}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file() && is_photo(path))
        .collect();
    paths.sort();
    anyhow::ensure!(
        !paths.is_empty(),
        "no photos (.jpg, .jpeg, .png, .webp) in {}",
        dir.display()
    );
    paths
        .iter()
        .map(|path| {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Ok(Photo {
                stem: path
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
                data: base64::engine::general_purpose::STANDARD.encode(bytes),
            })
        })
        .collect()
}

fn is_photo(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

#[derive(Serialize)]
struct Body<'a> {
    images: Vec<Image<'a>>,
    #[serde(rename = "topK", skip_serializing_if = "Option::is_none")]
    top_k: Option<usize>,
}

#[derive(Serialize)]
struct Image<'a> {
    id: String,
    data: &'a str,
}

/// `POST /v1/analyze` bodies of `per_request` photos each, cycling through
/// `photos`: body `b` holds photos `b*K .. b*K+K` (modulo the count), with ids
/// `<stem>-<n>` for that running index `n`. There are ceil(photos / K) of them,
/// so memory stays near one copy of the folder; the sender rotates through them.
pub fn build_bodies(photos: &[Photo], per_request: usize, top_k: Option<usize>) -> Vec<Bytes> {
    assert!(!photos.is_empty() && per_request > 0);
    (0..photos.len().div_ceil(per_request))
        .map(|b| {
            let images = (b * per_request..(b + 1) * per_request)
                .map(|n| {
                    let photo = &photos[n % photos.len()];
                    Image {
                        id: format!("{}-{n}", photo.stem),
                        data: &photo.data,
                    }
                })
                .collect();
            let body = serde_json::to_vec(&Body { images, top_k }).expect("a body serializes");
            Bytes::from(body)
        })
        .collect()
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 200 with a `results` array: how many photos were analysed, and the
    /// `error.code` of each photo that was not.
    Ok {
        photos: usize,
        image_errors: Vec<String>,
    },
    /// The request failed as a whole: the server's `error.code`, `http_<status>`
    /// when its body says nothing, or a client-side code (`timeout`,
    /// `connection_error`, `client_overloaded`).
    Failed(String),
}

fn error_code(value: &serde_json::Value) -> Option<String> {
    let code = value.get("error")?.get("code")?;
    Some(
        code.as_str()
            .map_or_else(|| code.to_string(), str::to_string),
    )
}

/// Classifies an HTTP answer to `POST /v1/analyze`.
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        return Outcome::Failed(
            json.as_ref()
                .and_then(error_code)
                .unwrap_or_else(|| format!("http_{status}")),
        );
    }
    let Some(results) = json.as_ref().and_then(|j| j.get("results")?.as_array()) else {
        return Outcome::Failed("invalid_response".to_string());
    };
    let mut photos = 0;
    let mut image_errors = Vec::new();
    for result in results {
        if result.get("error").is_some() {
            image_errors.push(error_code(result).unwrap_or_else(|| "unknown".to_string()));
        } else {
            photos += 1;
        }
    }
    Outcome::Ok {
        photos,
        image_errors,
    }
}

/// How long a closed-loop client waits after a 429 or 503: `Retry-After` in
/// seconds, at most one second; one second when it is missing or a date.
pub fn retry_wait(retry_after: Option<&str>) -> Duration {
    const CAP: f64 = 1.0;
    let seconds = retry_after
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .map_or(CAP, |s| s.clamp(0.0, CAP));
    Duration::from_secs_f64(seconds)
}

/// `darkroom_batch_size` sum and count per `model` label.
pub type BatchSizes = BTreeMap<String, (f64, f64)>;

const METRIC: &str = "darkroom_batch_size";

/// Reads the `_sum` and `_count` series of the `darkroom_batch_size` histogram
/// out of Prometheus text; other lines are ignored.
pub fn parse_batch_sizes(text: &str) -> BatchSizes {
    let mut sizes = BatchSizes::new();
    for line in text.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix(METRIC) else {
            continue;
        };
        let (is_sum, rest) = if let Some(rest) = rest.strip_prefix("_sum") {
            (true, rest)
        } else if let Some(rest) = rest.strip_prefix("_count") {
            (false, rest)
        } else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(inner) => match split_labels(inner) {
                Some(split) => split,
                None => continue,
            },
            None if rest.starts_with([' ', '\t']) => (BTreeMap::new(), rest),
            None => continue,
        };
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let Some(model) = labels.get("model") else {
            continue;
        };
        let entry = sizes.entry(model.clone()).or_default();
        if is_sum {
            entry.0 = value;
        } else {
            entry.1 = value;
        }
    }
    sizes
}

/// Parses `name="value",...}` (the text after `{`): the labels, and the rest of
/// the line after the closing brace.
fn split_labels(text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (name, after) = rest.split_once('=')?;
        let mut chars = after.trim_start().strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.trim().to_string(), value);
        let after_quote = &after.trim_start()[1 + end + 1..];
        rest = after_quote.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
}

/// Mean batch size per model over an interval: Δsum / Δcount between two
/// scrapes. Models that ran no batch in between are left out; `None` when no
/// model did (or the server has no such metric).
pub fn mean_batch_sizes(before: &BatchSizes, after: &BatchSizes) -> Option<BTreeMap<String, f64>> {
    let means: BTreeMap<String, f64> = after
        .iter()
        .filter_map(|(model, &(sum, count))| {
            let (sum0, count0) = before.get(model).copied().unwrap_or_default();
            let batches = count - count0;
            (batches > 0.0).then(|| (model.clone(), (sum - sum0) / batches))
        })
        .collect();
    (!means.is_empty()).then_some(means)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("darkroom-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn loads_only_photos_sorted_and_encoded() {
        let dir = scratch("load");
        std::fs::write(dir.join("b.PNG"), b"png").unwrap();
        std::fs::write(dir.join("a.jpg"), b"jpg").unwrap();
        std::fs::write(dir.join("notes.txt"), b"no").unwrap();
        std::fs::create_dir(dir.join("sub.jpg")).unwrap();
        let photos = load_photos(&dir).unwrap();
        let stems: Vec<&str> = photos.iter().map(|p| p.stem.as_str()).collect();
        assert_eq!(stems, ["a", "b"]);
        assert_eq!(photos[0].data, "anBn");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_folder_is_an_error_naming_it() {
        let dir = scratch("empty");
        let err = load_photos(&dir).err().unwrap().to_string();
        assert!(err.contains(&dir.display().to_string()), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn photo(stem: &str) -> Photo {
        Photo {
            stem: stem.to_string(),
            data: format!("{stem}=="),
        }
    }

    #[test]
    fn bodies_cycle_through_the_photos() {
        let photos = [photo("a"), photo("b"), photo("c")];
        let bodies = build_bodies(&photos, 2, Some(5));
        assert_eq!(bodies.len(), 2);
        let second: serde_json::Value = serde_json::from_slice(&bodies[1]).unwrap();
        assert_eq!(
            second,
            serde_json::json!({
                "images": [{"id": "c-2", "data": "c=="}, {"id": "a-3", "data": "a=="}],
                "topK": 5
            })
        );
        // More photos per request than photos: one body, repeats with distinct ids.
        let bodies = build_bodies(&photos[..1], 3, None);
        let only: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
        assert_eq!(only["images"][2]["id"], "a-2");
        assert!(only.get("topK").is_none());
    }

    #[test]
    fn classifies_answers() {
        let ok = br#"{"results": [{"id": "a", "concepts": []}, {"id": "b", "error": {"code": "decode_failed", "message": "x"}}, {"id": "c"}]}"#;
        assert_eq!(
            classify(200, ok),
            Outcome::Ok {
                photos: 2,
                image_errors: vec!["decode_failed".to_string()]
            }
        );
        let overloaded = br#"{"error": {"code": "overloaded", "message": "queue full"}}"#;
        assert_eq!(
            classify(503, overloaded),
            Outcome::Failed("overloaded".into())
        );
        assert_eq!(
            classify(502, b"Bad Gateway"),
            Outcome::Failed("http_502".into())
        );
        assert_eq!(classify(404, b"{}"), Outcome::Failed("http_404".into()));
        assert_eq!(
            classify(200, b"<html>"),
            Outcome::Failed("invalid_response".into())
        );
    }

    #[test]
    fn retry_after_is_capped_at_a_second() {
        assert_eq!(retry_wait(Some("0")), Duration::ZERO);
        assert_eq!(retry_wait(Some(" 0.25 ")), Duration::from_millis(250));
        assert_eq!(retry_wait(Some("30")), Duration::from_secs(1));
        assert_eq!(
            retry_wait(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Duration::from_secs(1)
        );
        assert_eq!(retry_wait(None), Duration::from_secs(1));
    }

    const SCRAPE: &str = r#"# HELP darkroom_batch_size Photos per inference batch.
# TYPE darkroom_batch_size histogram
darkroom_batch_size_bucket{model="efficientnet-lite0",le="1"} 3
darkroom_batch_size_sum{model="efficientnet-lite0"} 123
darkroom_batch_size_count{model="efficientnet-lite0"} 45
darkroom_batch_size_sum{kind="face", model="face\"x"} 8.5 1700000000000
darkroom_batch_size_count{kind="face", model="face\"x"} 2
darkroom_batch_size_sum 7
darkroom_batch_size_total{model="other"} 1
darkroom_batch_sizes_sum{model="other"} 1
darkroom_requests_total{model="efficientnet-lite0"} 9
"#;

    #[test]
    fn parses_the_batch_size_histogram() {
        let sizes = parse_batch_sizes(SCRAPE);
        let expected: BatchSizes = [
            ("efficientnet-lite0".to_string(), (123.0, 45.0)),
            ("face\"x".to_string(), (8.5, 2.0)),
        ]
        .into();
        assert_eq!(sizes, expected);
        assert!(parse_batch_sizes("not found").is_empty());
    }

    #[test]
    fn mean_batch_size_is_delta_sum_over_delta_count() {
        let before = parse_batch_sizes(SCRAPE);
        let mut after = before.clone();
        after.insert("efficientnet-lite0".into(), (123.0 + 60.0, 45.0 + 10.0));
        after.insert("new".into(), (12.0, 3.0));
        let means = mean_batch_sizes(&before, &after).unwrap();
        let expected: BTreeMap<String, f64> = [
            ("efficientnet-lite0".to_string(), 6.0),
            ("new".to_string(), 4.0),
        ]
        .into();
        assert_eq!(means, expected);
        assert_eq!(mean_batch_sizes(&before, &before), None);
        assert_eq!(
            mean_batch_sizes(&BatchSizes::new(), &BatchSizes::new()),
            None
        );
    }
}
