//! `darkroom bench`: closed- and open-loop HTTP load against the analyze API
//! (`POST /v1/analyze`) of a Darkroom server, or anything with its contract.

mod expect;
mod load;
mod pipeline;
mod report;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio::time::{sleep_until, Instant};

use load::{closed_loop, open_loop, progress, Live, Shared};
use report::{Load, Report};

/// The request-error code of an open-loop request dropped, not sent, because
/// `--max-in-flight` requests were already waiting.
pub const CLIENT_OVERLOADED: &str = "client_overloaded";

/// `darkroom bench --help`, for the `Command::Bench` variant in main.rs (a
/// variant's doc comment would replace anything set here on `BenchArgs`).
pub const LONG_ABOUT: &str =
    "Load-test a running server's analyze API: photos/s, latency percentiles, errors, batch sizes.

Sends `POST {url}/v1/analyze` requests, each with --images-per-request photos from --photos \
(read and base64-encoded once up front, cycled through), to a running `darkroom serve` or any \
server with the same contract, and reports over the measured interval (after --warmup):

  requests     sent to the server, and answered 200 (`ok`); requests/s counts the ok ones
  photos/s     photos analysed (ok requests' results without an error) per second
  latency      p50/p95/p99/max in ms of the ok requests, exact over every sample
  errors       by code: a request's `error.code` (or http_<status>, timeout, connection_error,
               client_overloaded) once per request; a photo's inline `error.code` once per photo
  mean batch   photos per inference batch per model, from the server's `darkroom_batch_size`
               histogram at GET {url}/metrics before and after (n/a when it has none)

Closed loop (default): --concurrency clients, each sending its next request when the previous \
one is answered; this finds the throughput at that concurrency. A client answered 429 or 503 \
waits Retry-After (at most 1 s) first. With --duration, the requests answered inside the \
measured window count and those still in flight at its end are abandoned; with --requests, \
the first N requests sent after warmup count and the interval ends at the last answer.

Open loop (--rate): requests are sent on a fixed schedule, Poisson arrivals by default \
(--arrival uniform for evenly spaced), whether or not earlier ones were answered, as real \
users do; latency is measured from each request's scheduled send time, so a server that falls \
behind shows it (no coordinated omission). At most --max-in-flight requests wait at once; \
those scheduled beyond that are dropped, not sent, and counted as client_overloaded. The \
requests scheduled inside the window count, the tool waits for their answers, and the \
interval runs to the later of the window's end and the last answer.

Pipeline (--pipeline N): instead of /v1/analyze, upload N photos to POST {url}/v1/photos with \
--concurrency uploads at once (each photo made unique by a trailer after its image data, so none is \
deduplicated), then wait until the server's pipeline has taken all of them to an outcome \
(published, needs_review, rejected or failed; read from darkroom_pipeline_photos at /metrics). \
Reports uploads/s, upload latency, and end-to-end photos/s from the first upload to the last outcome. \
With --rate R the uploads are open loop: one every 1/R s whether or not earlier ones were answered \
(at most --max-in-flight waiting, the rest dropped), each tried once (429/503 counted as refused), \
latency from the scheduled time; bench/scale.py ramps R.

Progress goes to stderr once a second; stdout carries only the report (--json: one JSON object).";

#[derive(Args)]
pub struct BenchArgs {
    /// Base URL of the server (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Folder of photos to send (its .jpg, .jpeg, .png, .webp files; subfolders are not searched).
    #[arg(long)]
    photos: PathBuf,
    /// Closed loop: this many clients, each sending its next request when the previous one is answered.
    #[arg(long, default_value_t = 8, conflicts_with = "rate")]
    concurrency: usize,
    /// Open loop instead: this many requests per second on a fixed schedule, answered or not.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: how the send times are spaced.
    #[arg(long, value_enum, default_value_t = Arrival::Poisson, requires = "rate")]
    arrival: Arrival,
    /// Open loop: at most this many requests waiting at once; more are dropped as client_overloaded.
    #[arg(long, default_value_t = 256, requires = "rate")]
    max_in_flight: usize,
    /// Photos per request.
    #[arg(long, default_value_t = 4)]
    images_per_request: usize,
    /// Seconds measured, after the warmup.
    #[arg(long, default_value_t = 20.0, conflicts_with = "requests")]
    duration: f64,
    /// Measure this many requests after the warmup instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds of load before measuring (not counted; lets the server warm up and batches fill).
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Sent as `topK`: at most this many concepts per photo (default: the server's).
    #[arg(long)]
    top_k: Option<usize>,
    /// Seconds before a request is given up and counted as the error `timeout`.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Upload this many photos to /v1/photos and time them to an outcome, instead of /v1/analyze load.
    #[arg(long, value_name = "N", conflicts_with = "requests")]
    pipeline: Option<usize>,
    /// Send `Expect: 100-continue` and the body only once the server says
    /// continue (as curl does for large bodies): a refusal on the headers
    /// then costs neither side the body. One connection per request.
    #[arg(long, conflicts_with = "pipeline")]
    expect_continue: bool,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Arrival {
    /// Exponentially distributed gaps (independent arrivals).
    Poisson,
    /// Evenly spaced, 1/rate apart.
    Uniform,
}

/// When measuring stops.
#[derive(Clone, Copy)]
enum Stop {
    At(Instant),
    After(u64),
}

fn seconds(name: &str, value: f64, zero_ok: bool) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        value.is_finite() && (value > 0.0 || (zero_ok && value == 0.0)),
        "--{name} must be a positive number of seconds{}",
        if zero_ok { " or 0" } else { "" }
    );
    Ok(Duration::from_secs_f64(value))
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let url = args.url.trim_end_matches('/').to_string();
    anyhow::ensure!(
        url.starts_with("http://"),
        "--url must be a plain http:// URL (the load tool speaks HTTP/1.1 without TLS), not {url}"
    );
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        args.images_per_request > 0,
        "--images-per-request must be at least 1"
    );
    anyhow::ensure!(args.max_in_flight > 0, "--max-in-flight must be at least 1");
    anyhow::ensure!(args.requests != Some(0), "--requests must be at least 1");
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of requests per second"
        );
    }
    let duration = seconds("duration", args.duration, false)?;
    let warmup = seconds("warmup", args.warmup, true)?;
    let timeout = seconds("timeout", args.timeout, false)?;

    if let Some(count) = args.pipeline {
        anyhow::ensure!(count > 0, "--pipeline must be at least 1");
        let photos = wire::load_photos(&args.photos)?
            .into_iter()
            .map(|p| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, p.data))
            .collect::<Result<Vec<_>, _>>()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()?;
        let limit = Duration::from_secs(3600);
        let pace = match args.rate {
            Some(rate) => pipeline::Pace::Open {
                rate,
                max_in_flight: args.max_in_flight,
            },
            None => pipeline::Pace::Closed(args.concurrency),
        };
        let report = runtime.block_on(pipeline::run(client, url, photos, count, pace, limit))?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.human());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let photos = wire::load_photos(&args.photos)?;
    let bodies = wire::build_bodies(&photos, args.images_per_request, args.top_k);
    drop(photos);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.min(4))
        .enable_all()
        .build()?;
    let load = Load {
        url: url.clone(),
        concurrency: args.rate.is_none().then_some(args.concurrency),
        rate: args.rate.map(|rate| {
            let arrival = match args.arrival {
                Arrival::Poisson => "poisson",
                Arrival::Uniform => "uniform",
            };
            (rate, arrival)
        }),
        images_per_request: args.images_per_request,
        warmup,
    };
    let report = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .tcp_nodelay(true)
            .build()?;
        // Fail fast on a server that is not there, rather than count a run of connection errors.
        if let Err(e) = client.get(format!("{url}/metrics")).send().await {
            if e.is_connect() {
                return Err(anyhow::Error::new(e).context(format!("cannot reach {url}")));
            }
        }
        let shared = Arc::new(Shared {
            analyze_url: format!("{url}/v1/analyze"),
            expect_continue: if args.expect_continue {
                Some(expect::split_url(&format!("{url}/v1/analyze"))?)
            } else {
                None
            },
            timeout,
            client,
            bodies,
            next_body: AtomicUsize::new(0),
            samples: Mutex::new(Vec::new()),
            live: Live::default(),
        });
        let start = Instant::now();
        let measure_start = start + warmup;
        let stop = match args.requests {
            Some(n) => Stop::After(n),
            None => Stop::At(measure_start + duration),
        };
        let progress = progress(shared.clone(), start, measure_start, stop);
        let before = {
            let shared = shared.clone();
            tokio::spawn(async move {
                sleep_until(measure_start).await;
                shared.batch_sizes(&url).await
            })
        };
        let measured = match args.rate {
            None => closed_loop(&shared, args.concurrency, measure_start, stop).await,
            Some(rate) => {
                open_loop(
                    &shared,
                    rate,
                    args.arrival,
                    args.max_in_flight,
                    start,
                    measure_start,
                    stop,
                )
                .await
            }
        };
        let after = shared.batch_sizes(&load.url).await;
        progress.abort();
        let _ = progress.await;
        let before = before.await?;
        let means = before
            .zip(after)
            .and_then(|(before, after)| wire::mean_batch_sizes(&before, &after));
        let samples = std::mem::take(&mut *shared.samples.lock().expect("samples lock"));
        anyhow::Ok(Report::new(&load, &samples, measured, means))
    })?;
    runtime.shutdown_background();

    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.human());
    }
    if report.ok_requests == 0 {
        eprintln!("error: no request succeeded");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
