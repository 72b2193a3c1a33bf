//! The engine over fake models: requests run only the backbones their
//! heads read, unknown models are refused, and heads change while serving
//! without a request ever seeing half a change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{Admission, AnalyzeOptions, Engine, EngineConfig, EngineError};
use models::analyzer::{Analyzer, LoadOptions};
use models::heads::LinearConceptHead;
use models::testing::{classify, detect, png, repository};
use models::{Backend, FakeBackend, ModelEntry, Tensor};

/// An engine over the fake repository; `classifier` stands in for the
/// fake classifier's backend.
fn engine(
    classifier: impl Fn(&Tensor) -> models::Result<models::Outputs> + Send + Sync + 'static,
) -> Engine {
    let repo = repository();
    let classifier = Arc::new(classifier);
    let analyzer =
        Analyzer::load_with(&repo, &LoadOptions::default(), &mut |entry: &ModelEntry| {
            let classifier = classifier.clone();
            let backend: Box<dyn Backend> = match entry.config.name.as_str() {
                "fake-classifier" => Box::new(FakeBackend(move |t: &Tensor| classifier(t))),
                _ => Box::new(FakeBackend(detect)),
            };
            Ok(backend)
        })
        .expect("loads with fakes");
    let config = EngineConfig {
        cpu_workers: 2,
        ..EngineConfig::default()
    };
    let admission = Admission {
        max_queued_images: 64,
        ..Admission::default()
    };
    Engine::start(&repo, analyzer, &config, admission, Arc::new(())).expect("starts")
}

/// A trained-concept head over the fake features ([3, 4] → [0.6, 0.8])
/// whose score is exactly `score`: zero weights, bias logit(score).
fn probe(name: &str, score: f32) -> Arc<LinearConceptHead> {
    let bias = (score / (1.0 - score)).ln();
    Arc::new(LinearConceptHead::new(
        name,
        "fake-classifier",
        vec![0.0, 0.0],
        bias,
    ))
}

fn score_of(concepts: &[(String, f32)], name: &str) -> Option<f32> {
    concepts.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_runs_only_the_backbones_its_heads_read() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let engine = engine(move |t| {
        counted.fetch_add(1, Ordering::SeqCst);
        classify(t)
    });
    let faces_only = engine
        .options(Some(&["fake-faces".to_string()]), AnalyzeOptions::default())
        .unwrap();
    let result = engine
        .analyze("p".into(), png(64, 64, 200), &faces_only)
        .await
        .unwrap();
    assert_eq!(result.faces.len(), 1);
    assert!(result.concepts.is_empty() && result.captions.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the classifier never ran");

    // Captions read the classifier: asking for them runs it.
    let captions = engine
        .options(Some(&["captions".to_string()]), AnalyzeOptions::default())
        .unwrap();
    let result = engine
        .analyze("p".into(), png(64, 64, 200), &captions)
        .await
        .unwrap();
    assert_eq!(result.captions[0].caption, "A TABBY CAT");
    assert!(result.concepts.is_empty(), "concepts were not asked for");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let unknown = engine.options(Some(&["nope".to_string()]), AnalyzeOptions::default());
    match unknown {
        Err(e @ EngineError::UnknownModel { .. }) => {
            assert_eq!(e.code(), "unknown_model");
            assert!(e.to_string().contains("fake-classifier"), "{e}");
        }
        _ => panic!("an unknown model must be refused"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_photo_is_a_permanent_image_error() {
    let engine = engine(classify);
    let opts = engine.options(None, AnalyzeOptions::default()).unwrap();
    let e = engine
        .analyze("p".into(), b"not a photo".to_vec(), &opts)
        .await
        .unwrap_err();
    assert!(matches!(e, EngineError::Image(_)), "{e:?}");
    assert!(e.is_permanent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_with_the_head_set_it_started_with() {
    // The classifier waits for the test's word before it answers.
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let gate = Mutex::new((entered_tx, released));
    let engine = Arc::new(engine(move |t| {
        let gate = gate.lock().unwrap();
        let _ = gate.0.send(());
        let _ = gate.1.recv_timeout(Duration::from_secs(10));
        classify(t)
    }));
    let before = engine.options(None, AnalyzeOptions::default()).unwrap();
    let running = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.analyze("p".into(), png(64, 64, 200), &before).await })
    };
    tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the request reached the classifier");
    // Mid-inference: a new concept arrives.
    engine.heads().update(|h| h.install(probe("forest", 0.9)));
    release.send(()).unwrap();
    let old = running.await.unwrap().unwrap();
    assert_eq!(
        score_of(&old.concepts, "forest"),
        None,
        "{:?}",
        old.concepts
    );

    // The next request sees it, and scores it like the built-in concepts.
    let release_next = release.clone();
    std::thread::spawn(move || {
        for _ in 0..4 {
            let _ = release_next.send(());
        }
    });
    let after = engine.options(None, AnalyzeOptions::default()).unwrap();
    let new = engine
        .analyze("p".into(), png(64, 64, 200), &after)
        .await
        .unwrap();
    let forest = score_of(&new.concepts, "forest").expect("the new head ran");
    assert!((forest - 0.9).abs() < 1e-5, "{forest}");
    assert!(
        new.concepts.windows(2).all(|w| w[0].1 >= w[1].1),
        "concepts are ranked together, best first: {:?}",
        new.concepts
    );
}

/// A writer swaps a pair of heads (installed together, removed together)
/// as fast as it can while clients keep analysing: every result holds both
/// heads or neither, with exactly the scores of the set its request
/// started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heads_swapped_under_load_never_mix_sets() {
    let engine = Arc::new(engine(|t| {
        // Slow enough that swaps land while requests are in flight.
        std::thread::sleep(Duration::from_millis(2));
        classify(t)
    }));
    // Generation g (the writer's g-th update): no probes when g % 3 == 0,
    // else both probes scoring 0.5 + g / 10_000.
    let expected = |generation: u64| -> Option<f32> {
        (!generation.is_multiple_of(3)).then(|| 0.5 + generation as f32 / 10_000.0)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let mut generation = 0u64;
            while !stop.load(Ordering::Relaxed) && generation < 4_000 {
                generation += 1;
                engine.heads().update(|h| match expected(generation) {
                    Some(score) => {
                        h.install(probe("probe-a", score));
                        h.install(probe("probe-b", score));
                    }
                    None => {
                        h.remove("concept:probe-a");
                        h.remove("concept:probe-b");
                    }
                });
                std::thread::sleep(Duration::from_micros(200));
            }
            generation
        })
    };
    let mut clients = Vec::new();
    for client in 0..8 {
        let engine = engine.clone();
        clients.push(tokio::spawn(async move {
            let mut seen: HashMap<u64, usize> = HashMap::new();
            let mut stale = 0usize;
            for i in 0..40 {
                let opts = engine
                    .options(None, AnalyzeOptions::default())
                    .expect("options");
                let generation = opts.generation();
                let _permit = engine.admit_waiting(1).await;
                let result = engine
                    .analyze(format!("{client}-{i}"), png(48, 48, 200), &opts)
                    .await
                    .expect("analyses");
                let (a, b) = (
                    score_of(&result.concepts, "probe-a"),
                    score_of(&result.concepts, "probe-b"),
                );
                assert_eq!(a, b, "a request saw half a change: {:?}", result.concepts);
                match (a, expected(generation)) {
                    (None, None) => {}
                    (Some(got), Some(want)) => assert!(
                        (got - want).abs() < 1e-5,
                        "generation {generation}: scored {got}, its set says {want}"
                    ),
                    (got, want) => panic!("generation {generation}: got {got:?}, want {want:?}"),
                }
                if engine.heads().snapshot().generation() != generation {
                    stale += 1;
                }
                *seen.entry(generation).or_default() += 1;
            }
            (seen.len(), stale)
        }));
    }
    let mut generations_seen = 0;
    let mut finished_on_an_older_set = 0;
    for client in clients {
        let (seen, stale) = client.await.expect("a client failed");
        generations_seen += seen;
        finished_on_an_older_set += stale;
    }
    stop.store(true, Ordering::Relaxed);
    let updates = writer.await.unwrap();
    assert!(updates > 10, "the writer made {updates} updates");
    // The test only means something if swaps happened during requests.
    assert!(
        finished_on_an_older_set > 0 && generations_seen > 10,
        "{finished_on_an_older_set} requests finished after a swap; {generations_seen} generations seen"
    );
}
