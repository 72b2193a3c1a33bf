//! The numbers `darkroom bench` reports, from the measured requests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::wire::Outcome;

/// One measured request: how long it took (from its send time, or in open
/// loop from its scheduled send time) and how it ended.
pub struct Sample {
    pub latency: Duration,
    pub outcome: Outcome,
}

/// The load that was applied, as reported.
pub struct Load {
    pub url: String,
    /// `Some(clients)` in closed loop, `None` in open loop.
    pub concurrency: Option<usize>,
    /// `Some((requests per second, arrival process))` in open loop.
    pub rate: Option<(f64, &'static str)>,
    pub images_per_request: usize,
    pub warmup: Duration,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub url: String,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub arrival: Option<&'static str>,
    pub images_per_request: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Requests the server received; open loop: plus those dropped as `client_overloaded` makes `scheduled`.
    pub requests: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<u64>,
    pub ok_requests: u64,
    pub photos: u64,
    pub photos_per_second: f64,
    pub requests_per_second: f64,
    pub latency_ms: Latency,
    /// Request errors (one per failed request) and photo errors (one per photo) by code.
    pub errors: BTreeMap<String, u64>,
    pub request_errors: BTreeMap<String, u64>,
    pub image_errors: BTreeMap<String, u64>,
    pub mean_batch_size: Option<BTreeMap<String, f64>>,
}

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least `p` percent of the values at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

fn latency(mut millis: Vec<f64>) -> Latency {
    millis.sort_by(f64::total_cmp);
    Latency {
        p50: percentile(&millis, 50.0),
        p95: percentile(&millis, 95.0),
        p99: percentile(&millis, 99.0),
        max: millis.last().copied(),
    }
}

impl Report {
    pub fn new(
        load: &Load,
        samples: &[Sample],
        duration: Duration,
        mean_batch_size: Option<BTreeMap<String, f64>>,
    ) -> Report {
        let mut ok_requests = 0;
        let mut photos = 0;
        let mut dropped = 0;
        let mut millis = Vec::new();
        let mut request_errors = BTreeMap::new();
        let mut image_errors = BTreeMap::new();
        for sample in samples {
            match &sample.outcome {
                Outcome::Ok {
                    photos: n,
                    image_errors: codes,
                } => {
                    ok_requests += 1;
                    photos += *n as u64;
                    millis.push(sample.latency.as_secs_f64() * 1000.0);
                    for code in codes {
                        *image_errors.entry(code.clone()).or_insert(0) += 1;
                    }
                }
                Outcome::Failed(code) => {
                    if code == super::CLIENT_OVERLOADED {
                        dropped += 1;
                    }
                    *request_errors.entry(code.clone()).or_insert(0) += 1;
                }
            }
        }
        let mut errors = request_errors.clone();
        for (code, n) in &image_errors {
            *errors.entry(code.clone()).or_insert(0) += n;
        }
        let seconds = duration.as_secs_f64();
        let per_second = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        Report {
            mode: if load.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            url: load.url.clone(),
            concurrency: load.concurrency,
            rate: load.rate.map(|(rate, _)| rate),
            arrival: load.rate.map(|(_, arrival)| arrival),
            images_per_request: load.images_per_request,
            warmup_s: load.warmup.as_secs_f64(),
            duration_s: seconds,
            requests: samples.len() as u64 - dropped,
            scheduled: load.rate.map(|_| samples.len() as u64),
            ok_requests,
            photos,
            photos_per_second: per_second(photos),
            requests_per_second: per_second(ok_requests),
            latency_ms: latency(millis),
            errors,
            request_errors,
            image_errors,
            mean_batch_size,
        }
    }

    /// The table printed without `--json`.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let load = match (self.concurrency, self.rate, self.arrival) {
            (Some(clients), _, _) => format!("closed loop, {clients} clients"),
            (None, Some(rate), Some(arrival)) => {
                format!("open loop, {rate} requests/s ({arrival} arrivals)")
            }
            _ => self.mode.to_string(),
        };
        let _ = writeln!(
            out,
            "darkroom bench  {}  {load}, {} photos per request",
            self.url, self.images_per_request
        );
        let _ = writeln!(
            out,
            "measured        {:.1} s after {:.1} s warmup",
            self.duration_s, self.warmup_s
        );
        let mut requests = format!("{} sent, {} ok", self.requests, self.ok_requests);
        if let Some(scheduled) = self.scheduled {
            requests = format!("{scheduled} scheduled, {requests}");
        }
        let _ = writeln!(
            out,
            "requests        {requests}  ({:.1} ok/s)",
            self.requests_per_second
        );
        let _ = writeln!(
            out,
            "photos          {} analysed  ({:.1} photos/s)",
            self.photos, self.photos_per_second
        );
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        let _ = writeln!(
            out,
            "latency ms      p50 {}  p95 {}  p99 {}  max {}  (ok requests)",
            ms(self.latency_ms.p50),
            ms(self.latency_ms.p95),
            ms(self.latency_ms.p99),
            ms(self.latency_ms.max)
        );
        let codes = |errors: &BTreeMap<String, u64>| {
            errors
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let errors = match (self.request_errors.is_empty(), self.image_errors.is_empty()) {
            (true, true) => "none".to_string(),
            (false, true) => format!("requests: {}", codes(&self.request_errors)),
            (true, false) => format!("photos: {}", codes(&self.image_errors)),
            (false, false) => format!(
                "requests: {}; photos: {}",
                codes(&self.request_errors),
                codes(&self.image_errors)
            ),
        };
        let _ = writeln!(out, "errors          {errors}");
        let batches = self.mean_batch_size.as_ref().map_or_else(
            || "n/a".to_string(),
            |means| {
                means
                    .iter()
                    .map(|(model, mean)| format!("{model} {mean:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        let _ = writeln!(out, "mean batch      {batches}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 95.0), Some(95.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), Some(4.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0, 2.0], 0.0), Some(1.0));
    }

    fn sample(ms: u64, outcome: Outcome) -> Sample {
        Sample {
            latency: Duration::from_millis(ms),
            outcome,
        }
    }

    fn ok(photos: usize, image_errors: &[&str]) -> Outcome {
        Outcome::Ok {
            photos,
            image_errors: image_errors.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn counts_rates_latencies_and_errors() {
        let load = Load {
            url: "http://x".into(),
            concurrency: None,
            rate: Some((10.0, "poisson")),
            images_per_request: 4,
            warmup: Duration::from_secs(1),
        };
        let samples = [
            sample(30, ok(4, &[])),
            sample(10, ok(3, &["decode_failed"])),
            sample(20, ok(2, &["decode_failed", "too_large"])),
            sample(500, Outcome::Failed("timeout".into())),
            sample(0, Outcome::Failed(super::super::CLIENT_OVERLOADED.into())),
        ];
        let report = Report::new(&load, &samples, Duration::from_secs(2), None);
        assert_eq!(report.mode, "open");
        assert_eq!(
            (report.requests, report.scheduled, report.ok_requests),
            (4, Some(5), 3)
        );
        assert_eq!(report.photos, 9);
        assert_eq!(report.photos_per_second, 4.5);
        assert_eq!(report.requests_per_second, 1.5);
        assert_eq!(
            report.latency_ms,
            Latency {
                p50: Some(20.0),
                p95: Some(30.0),
                p99: Some(30.0),
                max: Some(30.0)
            }
        );
        let errors: Vec<(&str, u64)> = report
            .errors
            .iter()
            .map(|(c, n)| (c.as_str(), *n))
            .collect();
        assert_eq!(
            errors,
            [
                ("client_overloaded", 1),
                ("decode_failed", 2),
                ("timeout", 1),
                ("too_large", 1)
            ]
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["concurrency"], serde_json::Value::Null);
        assert_eq!(json["mean_batch_size"], serde_json::Value::Null);
        let table = report.human();
        assert!(table.contains("p50 20.0"), "{table}");
        assert!(table.contains("mean batch      n/a"), "{table}");
        assert!(
            table.contains(
                "requests: client_overloaded 1, timeout 1; photos: decode_failed 2, too_large 1"
            ),
            "{table}"
        );
    }

    #[test]
    fn no_successful_request_has_no_latency() {
        let load = Load {
            url: "http://x".into(),
            concurrency: Some(2),
            rate: None,
            images_per_request: 1,
            warmup: Duration::ZERO,
        };
        let report = Report::new(
            &load,
            &[sample(5, Outcome::Failed("http_500".into()))],
            Duration::ZERO,
            None,
        );
        assert_eq!(report.latency_ms.p50, None);
        assert_eq!(report.photos_per_second, 0.0);
        assert_eq!(report.scheduled, None);
        assert!(report.human().contains("p50 -"));
    }
}
