//! Concepts trained from example photos, end to end in the pipeline:
//! requests checked, a version trained by a worker from stored embeddings,
//! activated when it meets its target, backfilled over the catalogue,
//! served by the watcher, retrained with reviewers' verdicts, deleted.
//! Once embedded (SQLite) and once scaled out (PostgreSQL + NATS
//! JetStream, at `PIPELINE_POSTGRES_URL` / `PIPELINE_NATS_URL`; failing,
//! not skipping, when they are missing).
//!
//! The embeddings are synthetic (two clouds in 64 dimensions), so the
//! test needs no model; the server's tests train on real photos.

mod support {
    pub mod synthetic;
}

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::analysis::Embedding;
use pipeline::concept::{ConceptHead, VersionStatus};
use pipeline::concepts::CreateConcept;
use pipeline::config::{MetadataConfig, PipelineConfig, QueueConfig};
use pipeline::rules::ReviewRules;
use pipeline::{Pipeline, PipelineError, PipelineOptions, Worker};
use support::synthetic::{self, NoAnalysis};

const MODEL: &str = "effnet";
const DIMS: usize = 64;

/// A photo near axis 0 (a forest) or axis 1 (anything else).
fn vector(forest: bool, seed: &mut u64) -> Embedding {
    synthetic::clouds(forest, DIMS, 0.3, seed)
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "t_{name}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// A fresh deployment: a SQLite file, or a PostgreSQL schema and a NATS
/// stream prefix of its own.
async fn open(scale_out: bool) -> (Pipeline, MetadataConfig, QueueConfig) {
    let id = unique("concepts");
    let (metadata, queue) = if scale_out {
        let pg = std::env::var("PIPELINE_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let nats =
            std::env::var("PIPELINE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        (
            MetadataConfig::Postgres {
                url: pg,
                schema: id.clone(),
                connections: 4,
            },
            QueueConfig::Nats {
                url: nats,
                prefix: id.clone(),
            },
        )
    } else {
        let dir = std::env::temp_dir().join(format!("darkroom-test-{id}"));
        (
            MetadataConfig::Sqlite {
                path: dir.join("darkroom.db"),
            },
            QueueConfig::Sqlite {},
        )
    };
    let blobs_dir = std::env::temp_dir().join(format!("darkroom-test-blobs-{id}"));
    let blobs = storage::BlobStore::open(&storage::StorageConfig::Local { path: blobs_dir })
        .expect("a local blob store");
    let pipeline = Pipeline::open(PipelineOptions {
        metadata: metadata.clone(),
        queue: queue.clone(),
        pipeline: PipelineConfig {
            concept_poll_ms: 100,
            ..PipelineConfig::default()
        },
        rules: ReviewRules::default(),
        blobs,
    })
    .await
    .unwrap_or_else(|e| {
        panic!("opening the pipeline (scaled out, PostgreSQL and NATS must be running): {e}")
    });
    (pipeline, metadata, queue)
}

/// 20 forest photos (`f00`..) and 40 others (`b00`..), analysed, with
/// embeddings. The others sort first, so background negatives (taken in
/// id order) are not forests, as they mostly are not in a real catalogue
/// of hashed ids.
async fn catalogue(pipeline: &Pipeline) {
    let mut seed = 7;
    for (prefix, forest, n) in [("f", true, 20), ("b", false, 40)] {
        for i in 0..n {
            let id = format!("{prefix}{i:02}");
            let e = vector(forest, &mut seed);
            synthetic::store_analysed(pipeline.store(), &id, MODEL, e).await;
        }
    }
}

fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i:02}")).collect()
}

fn request(name: &str, positives: Vec<String>, negatives: Vec<String>) -> CreateConcept {
    CreateConcept {
        name: name.into(),
        positives,
        negatives,
        target_precision: Some(0.9),
        activate: None,
    }
}

fn code(e: PipelineError) -> &'static str {
    e.code()
}

/// Waits until `check` gives something, or panics after `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn end_to_end(scale_out: bool) {
    let (pipeline, metadata, queue) = open(scale_out).await;
    let pipeline = Arc::new(pipeline);
    catalogue(&pipeline).await;
    let builtin = |name: &str| name == "cat";

    // Bad requests: refused with a code, nothing started.
    let bad = |r| {
        let pipeline = pipeline.clone();
        async move {
            code(
                pipeline
                    .create_concept(r, MODEL, &builtin)
                    .await
                    .unwrap_err(),
            )
        }
    };
    assert_eq!(
        bad(request("forest", ids("f", 0..4), vec![])).await,
        "too_few_examples"
    );
    assert_eq!(
        bad(request("", ids("f", 0..5), vec![])).await,
        "invalid_concept_name"
    );
    assert_eq!(
        bad(request(&"x".repeat(65), ids("f", 0..5), vec![])).await,
        "invalid_concept_name"
    );
    assert_eq!(
        bad(request("cat", ids("f", 0..5), vec![])).await,
        "concept_name_taken"
    );
    assert_eq!(
        bad(request("forest", ids("f", 0..5), ids("f", 4..6))).await,
        "conflicting_examples"
    );
    let mut unknown = ids("f", 0..5);
    unknown.push("nope".into());
    match pipeline
        .create_concept(request("forest", unknown, vec![]), MODEL, &builtin)
        .await
    {
        Err(PipelineError::InvalidConcept {
            code, photo_ids, ..
        }) => {
            assert_eq!(
                (code, photo_ids),
                ("unknown_photos", vec!["nope".to_string()])
            );
        }
        other => panic!("unknown photo accepted: {other:?}"),
    }
    assert!(
        pipeline.concepts().await.unwrap().is_empty(),
        "nothing was started"
    );

    // 15 forests against 5 negatives: 10 background negatives are added.
    let created = pipeline
        .create_concept(
            request("forest", ids("f", 0..15), ids("b", 0..5)),
            MODEL,
            &builtin,
        )
        .await
        .unwrap();
    assert_eq!(created, ("forest".to_string(), 1));
    // No worker yet: the first is still training, so a second is refused.
    let again = pipeline
        .create_concept(request("forest", ids("f", 0..15), vec![]), MODEL, &builtin)
        .await
        .unwrap_err();
    assert_eq!(code(again), "concept_training");

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let worker = Worker::new(pipeline.clone(), Arc::new(NoAnalysis), Arc::new(()));
    let worker = tokio::spawn(worker.run(stop.clone()));
    let served: Arc<Mutex<Vec<ConceptHead>>> = Arc::default();
    let sink = served.clone();
    let watcher = tokio::spawn(pipeline::concepts::watch(
        pipeline.clone(),
        Duration::from_millis(100),
        move |heads| *sink.lock().unwrap() = heads,
        stop,
    ));

    // Trained, activated (it meets 0.9 on separable clouds), backfilled.
    let concept = eventually("v1 trained and backfilled", Duration::from_secs(60), || {
        let pipeline = pipeline.clone();
        async move {
            let c = pipeline.concept("forest").await.unwrap();
            let done = c.versions[0].backfill.as_ref().is_some_and(|b| b.finished);
            done.then_some(c)
        }
    })
    .await;
    let v1 = &concept.versions[0];
    assert_eq!(v1.status, VersionStatus::Ready, "{v1:?}");
    assert_eq!(concept.active, Some(1));
    let metrics = v1.metrics.as_ref().unwrap();
    assert_eq!((metrics.positives, metrics.negatives), (15, 15));
    assert_eq!(metrics.background_negatives, 10);
    assert!(
        metrics.precision >= 0.9 && metrics.recall > 0.5,
        "{metrics:?}"
    );
    let backfill = v1.backfill.as_ref().unwrap();
    assert_eq!(backfill.done, 60);
    // Every forest photo is tagged, the held-back five included.
    let unseen = pipeline
        .store()
        .concept_score("forest", "f19")
        .await
        .unwrap()
        .unwrap();
    assert!(
        unseen >= metrics.threshold,
        "an unseen forest scores {unseen}"
    );
    let other = pipeline
        .store()
        .concept_score("forest", "b39")
        .await
        .unwrap()
        .unwrap();
    assert!(
        other < metrics.threshold,
        "an unseen other photo scores {other}"
    );
    assert!((20..=22).contains(&backfill.tagged), "{backfill:?}");

    // Served: the watcher installed the head and the rules' threshold.
    eventually("the head served", Duration::from_secs(10), || {
        let served = served.clone();
        async move { (served.lock().unwrap().len() == 1).then_some(()) }
    })
    .await;
    assert_eq!(
        pipeline.trained_thresholds().get("forest"),
        Some(&metrics.threshold)
    );

    // A reviewer strikes "forest" from a forest-like photo and accepts it
    // on another: the retrain takes both verdicts as labels.
    synthetic::review(pipeline.store(), "f16", &["forest"], &[], 2).await;
    synthetic::review(pipeline.store(), "b10", &[], &["forest"], 2).await;
    assert_eq!(pipeline.retrain_concept("forest").await.unwrap().1, 2);
    let spec = pipeline
        .store()
        .concept_spec("forest", 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(spec.from_review, 2);
    assert!(spec.positives.contains(&"f16".to_string()));
    assert!(spec.negatives.contains(&"b10".to_string()));
    let concept = eventually("v2 trained", Duration::from_secs(60), || {
        let pipeline = pipeline.clone();
        async move {
            let c = pipeline.concept("forest").await.unwrap();
            (c.versions[1].status != VersionStatus::Training && c.active == Some(2)).then_some(c)
        }
    })
    .await;
    assert_eq!(concept.versions[1].metrics.as_ref().unwrap().positives, 16);

    // Back to v1 by hand; unknown versions and concepts are 404s.
    assert_eq!(
        pipeline.activate_concept("forest", 1).await.unwrap().active,
        Some(1)
    );
    assert_eq!(
        code(pipeline.activate_concept("forest", 9).await.unwrap_err()),
        "concept_version_not_found"
    );
    assert_eq!(
        code(pipeline.activate_concept("lake", 1).await.unwrap_err()),
        "concept_not_found"
    );

    // Deleted: gone from the store, then from what is served.
    pipeline.delete_concept("forest").await.unwrap();
    assert_eq!(
        code(pipeline.delete_concept("forest").await.unwrap_err()),
        "concept_not_found"
    );
    eventually("the head withdrawn", Duration::from_secs(10), || {
        let served = served.clone();
        async move { served.lock().unwrap().is_empty().then_some(()) }
    })
    .await;
    assert!(pipeline.trained_thresholds().is_empty());

    // The name again, from scratch: its v1 is a new version (new job and
    // event ids, so neither the queue nor the event log takes it for the
    // old one), trained, activated and served.
    let again = pipeline
        .create_concept(
            request("forest", ids("f", 0..15), ids("b", 0..15)),
            MODEL,
            &builtin,
        )
        .await
        .unwrap();
    assert_eq!(again.1, 1);
    eventually(
        "the new v1 trained and served",
        Duration::from_secs(60),
        || {
            let (pipeline, served) = (pipeline.clone(), served.clone());
            async move {
                let c = pipeline.concept("forest").await.unwrap();
                let ready = c.active == Some(1) && served.lock().unwrap().len() == 1;
                ready.then_some(())
            }
        },
    )
    .await;
    let trained_events = pipeline
        .store()
        .read_events(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.kind.name() == "concept.trained")
        .count();
    if !scale_out {
        // Embedded the table is the log (scaled out, the relay empties it).
        assert_eq!(trained_events, 3, "v1, v2, and the new v1");
    }

    stop_tx.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), watcher).await;
    drop(pipeline);
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        pipeline::config::remove_deployment(&metadata, &queue),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    end_to_end(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out() {
    end_to_end(true).await;
}
