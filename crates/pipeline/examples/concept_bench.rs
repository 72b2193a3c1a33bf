//! What a trained concept costs, measured through the pipeline's own jobs:
//! the time to train a version on 1,000 stored examples (queue to ready),
//! and the backfill's throughput over a catalogue of stored embeddings
//! (100,000 by default), beside the same scoring done in memory with no
//! store (the peer: what the backfill would do if reading and writing the
//! database cost nothing).
//!
//! The embeddings are synthetic (1280 dimensions, L2-normalised, two
//! clouds), which is what the jobs see of real ones.
//!
//!   cargo run --release -p pipeline --example concept_bench [-- PHOTOS [postgres://...]]
//!
//! With a PostgreSQL URL (and NATS at PIPELINE_NATS_URL) it runs scaled out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline::analysis::Embedding;
use pipeline::concept::ConceptHead;
use pipeline::concepts::CreateConcept;
use pipeline::config::{MetadataConfig, PipelineConfig, QueueConfig};
use pipeline::rules::ReviewRules;
use pipeline::{Pipeline, PipelineOptions, Worker};

#[path = "../tests/support/synthetic.rs"]
mod synthetic;
use synthetic::NoAnalysis;

const DIMS: usize = 1280;
const MODEL: &str = "effnet";

/// Twelve times the noise on its axis: every 10th photo is a clear positive.
fn vector(positive: bool, seed: &mut u64) -> Embedding {
    synthetic::clouds(positive, DIMS, 1.0 / 12.0, seed)
}

fn progress(done: usize, total: usize, what: &str, started: Instant) {
    if done.is_multiple_of((total / 20).max(1)) || done == total {
        eprint!(
            "\r{what}: {done}/{total} ({:.0}/s)   ",
            done as f64 / started.elapsed().as_secs_f64().max(1e-9)
        );
        if done == total {
            eprintln!();
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let photos: usize = args.first().map_or(100_000, |a| a.parse().expect("PHOTOS"));
    let id = format!("bench_concepts_{}", std::process::id());
    let dir = std::env::temp_dir().join(&id);
    let (metadata, queue) = match args.get(1) {
        Some(url) => (
            MetadataConfig::Postgres {
                url: url.clone(),
                schema: id.clone(),
                connections: 4,
            },
            QueueConfig::Nats {
                url: std::env::var("PIPELINE_NATS_URL")
                    .unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
                prefix: id.clone(),
            },
        ),
        None => (
            MetadataConfig::Sqlite {
                path: dir.join("darkroom.db"),
            },
            QueueConfig::Sqlite {},
        ),
    };
    let blobs = storage::BlobStore::open(&storage::StorageConfig::Local {
        path: dir.join("blobs"),
    })
    .expect("a blob store");
    let pipeline = Arc::new(
        Pipeline::open(PipelineOptions {
            metadata: metadata.clone(),
            queue: queue.clone(),
            pipeline: PipelineConfig::default(),
            rules: ReviewRules::default(),
            blobs,
        })
        .await
        .expect("the pipeline opens"),
    );
    println!(
        "concept benchmark: {photos} photos, {DIMS}-dimensional embeddings, {} metadata",
        pipeline.store().kind()
    );

    // The catalogue: every 10th photo is a positive.
    let started = Instant::now();
    let mut seed = 1;
    for i in 0..photos {
        let pid = format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let e = vector(i % 10 == 0, &mut seed);
        synthetic::store_analysed(pipeline.store(), &pid, MODEL, e).await;
        progress(i + 1, photos, "storing the catalogue", started);
    }
    let ids: Vec<String> = (0..1000)
        .map(|i| format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    let positives: Vec<String> = ids.iter().step_by(10).cloned().collect();
    let negatives: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 0)
        .map(|(_, id)| id.clone())
        .collect();

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let worker = Worker::new(pipeline.clone(), Arc::new(NoAnalysis), Arc::new(()));
    let worker = tokio::spawn(worker.run(stop));

    let asked = Instant::now();
    pipeline
        .create_concept(
            CreateConcept {
                name: "bench".into(),
                positives: positives.clone(),
                negatives: negatives.clone(),
                target_precision: Some(0.9),
                activate: Some(true),
            },
            MODEL,
            &|_| false,
        )
        .await
        .expect("the request is valid");
    let (concept, trained_in) = loop {
        let c = pipeline.concept("bench").await.unwrap();
        if c.versions[0].status != pipeline::concept::VersionStatus::Training {
            break (c, asked.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let v = &concept.versions[0];
    let metrics = v.metrics.as_ref().expect("trained");
    println!(
        "training: {} positives + {} negatives, {:.2} s from request to ready ({} ms in the job); \
         out of fold precision {:.3}, recall {:.3}",
        metrics.positives,
        metrics.negatives,
        trained_in.as_secs_f64(),
        v.training_ms.unwrap_or(0),
        metrics.precision,
        metrics.recall
    );

    let backfill = loop {
        let c = pipeline.concept("bench").await.unwrap();
        if let Some(b) = c.versions[0].backfill.clone().filter(|b| b.finished) {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let store_rate = backfill.photos_per_second.unwrap_or(0.0);

    // The peer: the same scoring, every embedding already in memory.
    let head: ConceptHead = pipeline
        .store()
        .concept_head("bench", 1)
        .await
        .unwrap()
        .unwrap();
    let mut all = Vec::with_capacity(photos);
    let mut after = 0;
    loop {
        let page = pipeline
            .store()
            .embeddings_page(MODEL, after, 10_000)
            .await
            .unwrap();
        let Some(last) = page.last().map(|r| r.0) else {
            break;
        };
        after = last;
        all.extend(page.into_iter().map(|r| r.2));
    }
    let scored = Instant::now();
    let tagged = all
        .iter()
        .filter(|e| head.score(&e.0) >= head.threshold)
        .count();
    let memory_rate = all.len() as f64 / scored.elapsed().as_secs_f64();
    println!(
        "backfill: {} photos scored, {} tagged, {:.0} photos/s through the store",
        backfill.done, backfill.tagged, store_rate
    );
    println!(
        "peer (scoring in memory, no store): {} tagged, {:.0} photos/s; the store's share: \
         the backfill runs at {:.2}x the in-memory rate",
        tagged,
        memory_rate,
        store_rate / memory_rate
    );

    stop_tx.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    drop(pipeline);
    let _ = pipeline::config::remove_deployment(&metadata, &queue).await;
    let _ = std::fs::remove_dir_all(&dir);
}
