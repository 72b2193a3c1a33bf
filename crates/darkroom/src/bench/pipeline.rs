//! `darkroom bench --pipeline N`: the asynchronous path end to end. Uploads
//! N photos to `POST /v1/photos` (each made unique by a trailer after the
//! image data, which decoders ignore, so none is deduplicated), then waits
//! until the pipeline has taken every one to an outcome, watching the
//! server's `darkroom_pipeline_photos` gauge. Photos/s is N over the time
//! from the first upload to the last outcome.
//!
//! With `--rate R` the uploads are open loop instead: one every 1/R s
//! whether or not the earlier ones were answered (at most
//! `--max-in-flight` waiting; the rest are dropped and counted), each
//! tried once (a 429 or 503 is counted as refused, not retried), with
//! its latency measured from its scheduled time. `bench/scale.py` ramps
//! this rate to find where the pipeline stops keeping up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::report::percentile;
use super::wire::retry_wait;

const OUTCOMES: [&str; 4] = ["published", "needs_review", "rejected", "failed"];

#[derive(Debug, Serialize)]
pub struct PipelineReport {
    pub url: String,
    pub photos: usize,
    pub concurrency: usize,
    pub accepted: usize,
    pub upload_errors: usize,
    /// Open loop: the upload rate asked for (absent: closed loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Open loop: uploads answered 429 or 503 (not retried).
    pub refused: usize,
    /// Open loop: uploads not sent because `--max-in-flight` were waiting.
    pub dropped: usize,
    pub uploads_per_second: f64,
    pub upload_p50_ms: Option<f64>,
    pub upload_p99_ms: Option<f64>,
    /// Photos taken to an outcome per second, first upload to last outcome.
    pub photos_per_second: f64,
    pub seconds: f64,
    /// From the last upload to the last outcome.
    pub drain_seconds: f64,
    /// Outcomes reached during the run, by status.
    pub outcomes: Vec<(String, u64)>,
}

impl PipelineReport {
    pub fn human(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.0}"));
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        let how = match self.rate {
            Some(rate) => format!("open loop at {rate:.0} uploads/s"),
            None => format!("{} uploads at once", self.concurrency),
        };
        format!(
            "pipeline     {} ({how})\n\
             photos       {} uploaded, {} accepted, {} refused, {} dropped, {} upload errors\n\
             uploads      {:.1}/s, p50 {} ms, p99 {} ms\n\
             end to end   {:.1} photos/s ({:.1} s from first upload to last outcome; {:.1} s draining after the last upload)\n\
             outcomes     {}\n",
            self.url,
            self.photos,
            self.accepted,
            self.refused,
            self.dropped,
            self.upload_errors,
            self.uploads_per_second,
            ms(self.upload_p50_ms),
            ms(self.upload_p99_ms),
            self.photos_per_second,
            self.seconds,
            self.drain_seconds,
            outcomes.join(", "),
        )
    }
}

/// Photos per pipeline status from the server's Prometheus text.
fn photos_by_status(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("darkroom_pipeline_photos{status=\"")?;
            let (status, value) = rest.split_once("\"}")?;
            Some((status.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

async fn outcomes(client: &reqwest::Client, url: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let mut found = photos_by_status(&text);
    found.retain(|(status, _)| OUTCOMES.contains(&status.as_str()));
    anyhow::ensure!(
        text.contains("darkroom_pipeline_photos"),
        "{url}/metrics has no darkroom_pipeline_photos: is this a Darkroom server with the pipeline (role all or api)?"
    );
    Ok(found)
}

fn total(counts: &[(String, u64)]) -> u64 {
    counts.iter().map(|(_, n)| n).sum()
}

/// `bytes` with an 16-byte trailer after the image data: a new photo id.
fn unique(bytes: &[u8], nonce: u64, i: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    out.extend_from_slice(bytes);
    out.extend_from_slice(&nonce.to_le_bytes());
    out.extend_from_slice(&(i as u64).to_le_bytes());
    out
}

fn content_type(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else if bytes.get(8..12) == Some(b"WEBP") {
        "image/webp"
    } else {
        "image/jpeg"
    }
}

/// How the uploads are sent.
#[derive(Clone, Copy)]
pub enum Pace {
    /// This many uploaders, each sending the next photo when its last is
    /// accepted (retrying after Retry-After on 429 and 503).
    Closed(usize),
    /// One upload every 1/rate s, answered or not, at most `max_in_flight`
    /// waiting.
    Open { rate: f64, max_in_flight: usize },
}

/// Uploads with the pace `Open`: each tried once, latency from its
/// scheduled time. Returns (refused, dropped).
#[allow(clippy::too_many_arguments)]
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    photos: &Arc<Vec<Vec<u8>>>,
    nonce: u64,
    count: usize,
    rate: f64,
    max_in_flight: usize,
    latencies: &Arc<Mutex<Vec<f64>>>,
    errors: &Arc<AtomicUsize>,
) -> (usize, usize) {
    let refused = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut dropped = 0;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(scheduled).await;
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            dropped += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let source = &photos[i % photos.len()];
        let request = client
            .post(format!("{url}/v1/photos"))
            .header("content-type", content_type(source))
            .body(unique(source, nonce, i));
        let (latencies, errors, refused, in_flight) = (
            latencies.clone(),
            errors.clone(),
            refused.clone(),
            in_flight.clone(),
        );
        tasks.spawn(async move {
            match request.send().await.map(|r| r.status().as_u16()) {
                Ok(202) => {
                    let ms = scheduled.elapsed().as_secs_f64() * 1000.0;
                    latencies.lock().expect("latencies").push(ms);
                }
                Ok(429 | 503) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    while tasks.join_next().await.is_some() {}
    (refused.load(Ordering::Relaxed), dropped)
}

pub async fn run(
    client: reqwest::Client,
    url: String,
    photos: Vec<Vec<u8>>,
    count: usize,
    pace: Pace,
    limit: Duration,
) -> anyhow::Result<PipelineReport> {
    let before = outcomes(&client, &url).await?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let photos = Arc::new(photos);
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let (concurrency, rate, refused, dropped) = match pace {
        Pace::Open {
            rate,
            max_in_flight,
        } => {
            let (refused, dropped) = open_loop(
                &client,
                &url,
                &photos,
                nonce,
                count,
                rate,
                max_in_flight,
                &latencies,
                &errors,
            )
            .await;
            (max_in_flight, Some(rate), refused, dropped)
        }
        Pace::Closed(concurrency) => (concurrency, None, 0, 0),
    };
    let uploaders: Vec<_> = (0..if rate.is_some() { 0 } else { concurrency })
        .map(|_| {
            let (client, url, photos, next, latencies, errors) = (
                client.clone(),
                url.clone(),
                photos.clone(),
                next.clone(),
                latencies.clone(),
                errors.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let source = &photos[i % photos.len()];
                    let body = unique(source, nonce, i);
                    loop {
                        let sent = Instant::now();
                        let response = client
                            .post(format!("{url}/v1/photos"))
                            .header("content-type", content_type(source))
                            .body(body.clone())
                            .send()
                            .await;
                        match response {
                            Ok(r) if r.status().as_u16() == 202 => {
                                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                                latencies.lock().expect("latencies").push(ms);
                                break;
                            }
                            Ok(r) if matches!(r.status().as_u16(), 429 | 503) => {
                                let wait = r
                                    .headers()
                                    .get("retry-after")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string);
                                tokio::time::sleep(retry_wait(wait.as_deref())).await;
                            }
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for uploader in uploaders {
        uploader.await?;
    }
    let uploaded = Instant::now();
    let accepted = latencies.lock().expect("latencies").len();
    let want = total(&before) + accepted as u64;
    let mut last_report = Instant::now();
    let after = loop {
        let now = outcomes(&client, &url).await?;
        if total(&now) >= want {
            break now;
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "only {} of {accepted} photos reached an outcome in {limit:?}",
            total(&now) - total(&before)
        );
        if last_report.elapsed() > Duration::from_secs(1) {
            eprintln!(
                "  {:>5.1}s  {}/{accepted} at an outcome",
                start.elapsed().as_secs_f64(),
                total(&now) - total(&before)
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let seconds = start.elapsed().as_secs_f64();
    let mut latencies = latencies.lock().expect("latencies").clone();
    latencies.sort_by(f64::total_cmp);
    let outcomes = after
        .iter()
        .map(|(status, n)| {
            let was = before
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            (status.clone(), n - was.min(*n))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok(PipelineReport {
        url,
        photos: count,
        concurrency,
        accepted,
        rate,
        refused,
        dropped,
        upload_errors: errors.load(Ordering::Relaxed),
        uploads_per_second: accepted as f64 / (uploaded - start).as_secs_f64(),
        upload_p50_ms: percentile(&latencies, 50.0),
        upload_p99_ms: percentile(&latencies, 99.0),
        photos_per_second: accepted as f64 / seconds,
        seconds,
        drain_seconds: uploaded.elapsed().as_secs_f64(),
        outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_gauge_and_makes_unique_bodies() {
        let text = "# TYPE darkroom_pipeline_photos gauge\ndarkroom_pipeline_photos{status=\"published\"} 7\ndarkroom_pipeline_photos{status=\"stored\"} 2\n";
        assert_eq!(
            photos_by_status(text),
            vec![("published".to_string(), 7), ("stored".to_string(), 2)]
        );
        assert_ne!(unique(b"abc", 1, 0), unique(b"abc", 1, 1));
        assert!(unique(b"abc", 1, 0).starts_with(b"abc"));
        assert_eq!(content_type(b"\x89PNG\r\n"), "image/png");
    }
}
