//! The service's metrics in Prometheus text format: requests by route and
//! status, latency, in-flight requests, refusals, decode time, and per model
//! the queue wait, batch size and inference time.
//!
//! Hand-rolled (a few counters and fixed-bucket histograms behind short
//! locks) rather than a metrics framework: the set is small and fixed, and
//! `/metrics` renders it in one pass.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use engine::{AdmissionGauge, BatcherGauge};

/// Latency buckets in seconds, 1 ms to 60 s.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Batch-size buckets.
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound (not cumulative; summed on render).
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

/// A family of histograms keyed by their label set (already rendered).
#[derive(Debug)]
struct HistogramVec {
    bounds: &'static [f64],
    /// Guards the per-label histograms; held only to add one observation.
    series: Mutex<BTreeMap<String, Histogram>>,
}

impl HistogramVec {
    fn new(bounds: &'static [f64]) -> Self {
        HistogramVec {
            bounds,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    fn observe(&self, labels: String, value: f64) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series
            .entry(labels)
            .or_insert_with(|| Histogram::new(self.bounds))
            .observe(value);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let series = self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (labels, histogram) in &series {
            histogram.render(out, name, labels);
        }
    }
}

/// A family of counters keyed by their label set.
#[derive(Debug, Default)]
struct CounterVec {
    /// Guards the per-label counts.
    series: Mutex<BTreeMap<String, u64>>,
}

impl CounterVec {
    fn add(&self, labels: String, n: u64) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        *series.entry(labels).or_default() += n;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let series = self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (labels, value) in series {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Per-model numbers the batchers keep themselves, read at render time.

#[derive(Debug)]
pub struct Metrics {
    requests: CounterVec,
    request_seconds: HistogramVec,
    in_flight: AtomicI64,
    rejected: CounterVec,
    images: CounterVec,
    thumbnails: CounterVec,
    decode_seconds: HistogramVec,
    queue_wait_seconds: HistogramVec,
    batch_size: HistogramVec,
    inference_seconds: HistogramVec,
    jobs: CounterVec,
    job_seconds: HistogramVec,
}

/// The pipeline's numbers read from its stores at render time.
#[derive(Debug, Clone, Default)]
pub struct PipelineGauge {
    /// Photos per status (from the metadata store).
    pub photos: Vec<(&'static str, u64)>,
    /// Jobs in the work queue, if it answered.
    pub queue_depth: Option<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: CounterVec::default(),
            request_seconds: HistogramVec::new(SECONDS),
            in_flight: AtomicI64::new(0),
            rejected: CounterVec::default(),
            images: CounterVec::default(),
            thumbnails: CounterVec::default(),
            decode_seconds: HistogramVec::new(SECONDS),
            queue_wait_seconds: HistogramVec::new(SECONDS),
            batch_size: HistogramVec::new(SIZES),
            inference_seconds: HistogramVec::new(SECONDS),
            jobs: CounterVec::default(),
            job_seconds: HistogramVec::new(SECONDS),
        }
    }
}

/// Label values here are route templates, codes and model names: no quotes
/// or backslashes, but escape anyway so the output always parses.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Metrics {
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self, route: &str, status: u16, elapsed: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let route = label(route);
        self.requests
            .add(format!("route=\"{route}\",status=\"{status}\""), 1);
        self.request_seconds
            .observe(format!("route=\"{route}\""), elapsed.as_secs_f64());
    }

    /// A request refused before any work (`reason` is its error code).
    pub fn rejected(&self, reason: &str) {
        self.rejected
            .add(format!("reason=\"{}\"", label(reason)), 1);
    }

    /// One image answered: `ok` or its error code.
    pub fn image(&self, outcome: &str) {
        self.images
            .add(format!("outcome=\"{}\"", label(outcome)), 1);
    }

    /// One thumbnail served: `hit` from the blob store or `miss` rendered.
    pub fn thumbnail(&self, cache: &str) {
        self.thumbnails
            .add(format!("cache=\"{}\"", label(cache)), 1);
    }

    /// A pipeline job settled (`outcome`: done, retried, dead).
    pub fn job(&self, kind: &str, outcome: &str, elapsed: Duration) {
        let kind = label(kind);
        self.jobs
            .add(format!("kind=\"{kind}\",outcome=\"{}\"", label(outcome)), 1);
        self.job_seconds
            .observe(format!("kind=\"{kind}\""), elapsed.as_secs_f64());
    }

    pub fn render(
        &self,
        batchers: &[BatcherGauge],
        admission: Option<&AdmissionGauge>,
        pipeline: &PipelineGauge,
    ) -> String {
        let mut out = String::new();
        self.requests.render(
            &mut out,
            "darkroom_http_requests_total",
            "HTTP requests answered, by route template and status.",
        );
        self.request_seconds.render(
            &mut out,
            "darkroom_http_request_duration_seconds",
            "Time from request to response, by route template.",
        );
        let _ = writeln!(
            out,
            "# HELP darkroom_http_in_flight_requests Requests being handled now.\n\
             # TYPE darkroom_http_in_flight_requests gauge\n\
             darkroom_http_in_flight_requests {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        self.rejected.render(
            &mut out,
            "darkroom_rejected_requests_total",
            "Requests refused before any work, by reason (overloaded, not_ready, shutting_down).",
        );
        self.images.render(
            &mut out,
            "darkroom_images_total",
            "Images answered, by outcome (ok or the error code).",
        );
        self.thumbnails.render(
            &mut out,
            "darkroom_thumbnails_total",
            "Thumbnails served, by cache outcome (hit, miss).",
        );
        self.decode_seconds.render(
            &mut out,
            "darkroom_decode_seconds",
            "Decode and preprocessing of one photo for every model (CPU pool).",
        );
        self.queue_wait_seconds.render(
            &mut out,
            "darkroom_queue_wait_seconds",
            "Time a photo waited in a model's batcher queue.",
        );
        self.batch_size.render(
            &mut out,
            "darkroom_batch_size",
            "Photos per inference batch, by model.",
        );
        self.inference_seconds.render(
            &mut out,
            "darkroom_inference_seconds",
            "Model run time per batch, by model.",
        );
        per_model(
            &mut out,
            "darkroom_batcher_queued",
            "gauge",
            "Photos admitted to a model's queue and not yet batched.",
            batchers.iter().map(|b| (&b.model, b.queued as u64)),
        );
        per_model(
            &mut out,
            "darkroom_batcher_cancelled_total",
            "counter",
            "Photos dropped before inference because their client went away.",
            batchers.iter().map(|b| (&b.model, b.cancelled)),
        );
        if let Some(a) = admission {
            let gauges = [
                (
                    "darkroom_admission_work_seconds",
                    "Priced work admitted and not yet answered, in core-seconds.",
                    a.in_flight.work_us as f64 / 1e6,
                ),
                (
                    "darkroom_admission_memory_bytes",
                    "Bytes held by admitted work (bodies, model inputs).",
                    a.in_flight.memory as f64,
                ),
                (
                    "darkroom_admission_photos",
                    "Photos admitted and not yet answered.",
                    f64::from(a.in_flight.photos),
                ),
                (
                    "darkroom_admission_rate",
                    "Service rate measured while saturated: priced core-seconds done per second.",
                    a.rate / 1e6,
                ),
                (
                    "darkroom_admission_expected_wait_seconds",
                    "How long the work in flight should take to drain; admission refuses past limits.max_queue_wait_ms.",
                    a.expected_wait.as_secs_f64(),
                ),
            ];
            for (name, help, value) in gauges {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
                );
            }
        }
        self.jobs.render(
            &mut out,
            "darkroom_pipeline_jobs_total",
            "Pipeline jobs settled by this process, by kind (process, callback) and outcome (done, retried, dead).",
        );
        self.job_seconds.render(
            &mut out,
            "darkroom_pipeline_job_seconds",
            "Time from a job's delivery to its settling, by kind.",
        );
        let _ = writeln!(
            out,
            "# HELP darkroom_pipeline_photos Photos in each pipeline status (all processes).\n\
             # TYPE darkroom_pipeline_photos gauge"
        );
        for (status, n) in &pipeline.photos {
            let _ = writeln!(out, "darkroom_pipeline_photos{{status=\"{status}\"}} {n}");
        }
        if let Some(depth) = pipeline.queue_depth {
            let _ = writeln!(
                out,
                "# HELP darkroom_pipeline_queue_depth Jobs in the work queue (all processes).\n\
                 # TYPE darkroom_pipeline_queue_depth gauge\n\
                 darkroom_pipeline_queue_depth {depth}"
            );
        }
        out
    }
}

/// One family read from the batchers at render time: a value per model.
fn per_model<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    values: impl Iterator<Item = (&'a String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (model, value) in values {
        let _ = writeln!(out, "{name}{{model=\"{}\"}} {value}", label(model));
    }
}

/// The engine reports decode times and batches here.
impl engine::EngineObserver for Metrics {
    fn decoded(&self, elapsed: Duration) {
        self.decode_seconds
            .observe(String::new(), elapsed.as_secs_f64());
    }

    fn batch(&self, model: &str, record: &engine::observer::BatchRecord<'_>) {
        let labels = format!("model=\"{}\"", label(model));
        self.batch_size.observe(labels.clone(), record.size as f64);
        self.inference_seconds
            .observe(labels.clone(), record.run_time.as_secs_f64());
        for wait in record.queue_waits {
            self.queue_wait_seconds
                .observe(labels.clone(), wait.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::observer::BatchRecord;
    use engine::EngineObserver;

    #[test]
    fn renders_prometheus_text_with_cumulative_buckets() {
        let m = Metrics::default();
        m.request_started();
        m.request_finished("/v1/analyze", 200, Duration::from_millis(30));
        let waits = [Duration::from_millis(2), Duration::from_millis(4)];
        m.batch(
            "efficientnet-lite0",
            &BatchRecord {
                size: 2,
                queue_waits: &waits,
                run_time: Duration::from_millis(20),
                failed: false,
            },
        );
        m.rejected("overloaded");
        m.job("process", "done", Duration::from_millis(300));
        let text = m.render(
            &[BatcherGauge {
                model: "efficientnet-lite0".into(),
                queued: 3,
                cancelled: 1,
            }],
            Some(&AdmissionGauge {
                in_flight: engine::admission::Cost::new(1_500_000, 4096, 3),
                rate: 2_000_000.0,
                expected_wait: Duration::from_millis(750),
            }),
            &PipelineGauge {
                photos: vec![("published", 7)],
                queue_depth: Some(2),
            },
        );
        for line in [
            "darkroom_admission_work_seconds 1.5",
            "darkroom_admission_photos 3",
            "darkroom_admission_rate 2",
            "darkroom_admission_expected_wait_seconds 0.75",
            "darkroom_pipeline_jobs_total{kind=\"process\",outcome=\"done\"} 1",
            "darkroom_pipeline_photos{status=\"published\"} 7",
            "darkroom_pipeline_queue_depth 2",
            "darkroom_http_requests_total{route=\"/v1/analyze\",status=\"200\"} 1",
            "darkroom_http_in_flight_requests 0",
            "darkroom_batch_size_bucket{model=\"efficientnet-lite0\",le=\"2\"} 1",
            "darkroom_batch_size_bucket{model=\"efficientnet-lite0\",le=\"128\"} 1",
            "darkroom_batch_size_sum{model=\"efficientnet-lite0\"} 2",
            "darkroom_batch_size_count{model=\"efficientnet-lite0\"} 1",
            "darkroom_queue_wait_seconds_count{model=\"efficientnet-lite0\"} 2",
            "darkroom_rejected_requests_total{reason=\"overloaded\"} 1",
            "darkroom_batcher_queued{model=\"efficientnet-lite0\"} 3",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }
}
