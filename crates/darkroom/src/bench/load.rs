//! The load itself: closed-loop clients, the open-loop schedule, and the
//! shared state every request task records into.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};

use super::report::Sample;
use super::wire::{self, BatchSizes, Outcome};
use super::{Arrival, Stop, CLIENT_OVERLOADED};

/// Counts of measured requests for the progress line.
#[derive(Default)]
pub struct Live {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    photos: AtomicU64,
    in_flight: AtomicUsize,
}

/// What every request task shares.
pub struct Shared {
    pub client: reqwest::Client,
    pub analyze_url: String,
    /// `--expect-continue`: the analyze URL's address and path, for [`super::expect::post`].
    pub expect_continue: Option<(String, String)>,
    pub bodies: Vec<Bytes>,
    /// Before a request is given up as `timeout`.
    pub timeout: Duration,
    pub next_body: AtomicUsize,
    /// Measured requests only.
    pub samples: Mutex<Vec<Sample>>,
    pub live: Live,
}

/// One request in flight; counted down when dropped, also when its task is aborted.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.live.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    fn enter(self: &Arc<Self>) -> InFlight {
        self.live.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Sends the next body; returns the outcome and, for a 429 or 503, how long to back off.
    async fn send(&self) -> (Outcome, Option<Duration>) {
        let body =
            self.bodies[self.next_body.fetch_add(1, Ordering::Relaxed) % self.bodies.len()].clone();
        if let Some((host, path)) = &self.expect_continue {
            return match tokio::time::timeout(self.timeout, super::expect::post(host, path, &body))
                .await
            {
                Ok(Ok(answer)) => {
                    let back_off = matches!(answer.status, 429 | 503)
                        .then(|| wire::retry_wait(answer.retry_after.as_deref()));
                    (wire::classify(answer.status, &answer.body), back_off)
                }
                Ok(Err(_)) => (Outcome::Failed("connection_error".to_string()), None),
                Err(_) => (Outcome::Failed("timeout".to_string()), None),
            };
        }
        let response = self
            .client
            .post(&self.analyze_url)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let transport = |e: reqwest::Error| {
            let code = if e.is_timeout() {
                "timeout"
            } else {
                "connection_error"
            };
            (Outcome::Failed(code.to_string()), None)
        };
        let response = match response {
            Ok(response) => response,
            Err(e) => return transport(e),
        };
        let status = response.status().as_u16();
        let back_off = matches!(status, 429 | 503).then(|| {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok());
            wire::retry_wait(retry_after)
        });
        match response.bytes().await {
            Ok(body) => (wire::classify(status, &body), back_off),
            Err(e) => transport(e),
        }
    }

    fn record(&self, latency: Duration, outcome: Outcome) {
        let live = &self.live;
        let dropped = matches!(&outcome, Outcome::Failed(code) if code == CLIENT_OVERLOADED);
        live.sent.fetch_add(u64::from(!dropped), Ordering::Relaxed);
        match &outcome {
            Outcome::Ok { photos, .. } => {
                live.ok.fetch_add(1, Ordering::Relaxed);
                live.photos.fetch_add(*photos as u64, Ordering::Relaxed);
            }
            Outcome::Failed(_) => {
                live.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.samples
            .lock()
            .expect("samples lock")
            .push(Sample { latency, outcome });
    }

    /// The server's batch-size histogram; `None` when /metrics cannot be read.
    pub async fn batch_sizes(&self, url: &str) -> Option<BatchSizes> {
        let response = self
            .client
            .get(format!("{url}/metrics"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        Some(wire::parse_batch_sizes(&response.text().await.ok()?))
    }
}

/// Waits for every task; a task's panic is the tool's.
async fn join_all(tasks: &mut JoinSet<()>) {
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

/// Runs `clients` closed-loop clients; returns the measured interval.
pub async fn closed_loop(
    shared: &Arc<Shared>,
    clients: usize,
    measure_start: Instant,
    stop: Stop,
) -> Duration {
    let tickets = Arc::new(AtomicU64::new(0));
    let last_done = Arc::new(Mutex::new(measure_start));
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (shared, tickets, last_done) = (shared.clone(), tickets.clone(), last_done.clone());
        tasks.spawn(async move {
            loop {
                let sent = Instant::now();
                let counted = match stop {
                    Stop::At(end) if sent >= end => return,
                    Stop::At(_) => false,
                    Stop::After(n) if sent >= measure_start => {
                        if tickets.fetch_add(1, Ordering::Relaxed) >= n {
                            return;
                        }
                        true
                    }
                    Stop::After(_) => false,
                };
                let in_flight = shared.enter();
                let (outcome, back_off) = shared.send().await;
                drop(in_flight);
                let done = Instant::now();
                let measured = match stop {
                    Stop::At(end) => done >= measure_start && done <= end,
                    Stop::After(_) => counted,
                };
                if measured {
                    let mut last = last_done.lock().expect("last_done lock");
                    *last = (*last).max(done);
                    shared.record(done - sent, outcome);
                }
                if let Some(wait) = back_off {
                    sleep(wait).await;
                }
            }
        });
    }
    match stop {
        Stop::At(end) => {
            sleep_until(end).await;
            tasks.shutdown().await;
            end - measure_start
        }
        Stop::After(_) => {
            join_all(&mut tasks).await;
            let last = *last_done.lock().expect("last_done lock");
            last - measure_start
        }
    }
}

/// SplitMix64: enough randomness for arrival times, no dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(nanos ^ u64::from(std::process::id()).rotate_left(32))
    }

    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sends on a schedule of `rate` requests per second; returns the measured interval.
pub async fn open_loop(
    shared: &Arc<Shared>,
    rate: f64,
    arrival: Arrival,
    max_in_flight: usize,
    start: Instant,
    measure_start: Instant,
    stop: Stop,
) -> Duration {
    let mut rng = Rng::seeded();
    let mut gap = || match arrival {
        Arrival::Uniform => 1.0 / rate,
        Arrival::Poisson => -(1.0 - rng.next()).ln() / rate,
    };
    let last_done = Arc::new(Mutex::new(measure_start));
    let mut tasks = JoinSet::new();
    let mut offset = gap();
    let mut scheduled = 0u64;
    let mut last_at = measure_start;
    let window_end = loop {
        let at = start + Duration::from_secs_f64(offset);
        let measured = at >= measure_start;
        match stop {
            Stop::At(end) if at >= end => break end,
            Stop::After(n) if measured && scheduled >= n => break last_at,
            _ => {}
        }
        offset += gap();
        if measured {
            scheduled += 1;
            last_at = at;
        }
        sleep_until(at).await;
        while tasks.try_join_next().is_some() {}
        if shared.live.in_flight.load(Ordering::Relaxed) >= max_in_flight {
            if measured {
                shared.record(
                    Duration::ZERO,
                    Outcome::Failed(CLIENT_OVERLOADED.to_string()),
                );
            }
            continue;
        }
        let (shared, last_done) = (shared.clone(), last_done.clone());
        // Counted in flight from now, so the next check sees it before it is polled.
        let in_flight = shared.enter();
        tasks.spawn(async move {
            let (outcome, _) = shared.send().await;
            drop(in_flight);
            let done = Instant::now();
            if measured {
                let mut last = last_done.lock().expect("last_done lock");
                *last = (*last).max(done);
                shared.record(done - at, outcome);
            }
        });
    };
    join_all(&mut tasks).await;
    let last = *last_done.lock().expect("last_done lock");
    last.max(window_end) - measure_start
}

/// A status line on stderr, updated once a second (hidden when stderr is not a terminal).
pub fn progress(
    shared: Arc<Shared>,
    start: Instant,
    measure_start: Instant,
    stop: Stop,
) -> tokio::task::JoinHandle<()> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    tokio::spawn(async move {
        let _clear = Clear(bar.clone());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let live = &shared.live;
            let in_flight = live.in_flight.load(Ordering::Relaxed);
            if now < measure_start {
                let elapsed = (now - start).as_secs_f64();
                bar.set_message(format!("warming up {elapsed:.0} s  {in_flight} in flight"));
                bar.tick();
                continue;
            }
            let elapsed = (now - measure_start).as_secs_f64();
            let sent = live.sent.load(Ordering::Relaxed);
            let target = match stop {
                Stop::At(end) => {
                    format!("{elapsed:.0}/{:.0} s", (end - measure_start).as_secs_f64())
                }
                Stop::After(n) => format!("{elapsed:.0} s  {sent}/{n} requests"),
            };
            let photos = live.photos.load(Ordering::Relaxed) as f64 / elapsed.max(1e-3);
            bar.set_message(format!(
                "measuring {target}  {} ok  {} failed  {photos:.1} photos/s  {in_flight} in flight",
                live.ok.load(Ordering::Relaxed),
                live.failed.load(Ordering::Relaxed),
            ));
            bar.tick();
        }
    })
}

/// Clears the progress line when its task ends or is aborted.
struct Clear(ProgressBar);

impl Drop for Clear {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
