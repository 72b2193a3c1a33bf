//! The engine over fake models: requests run only the backbones their
//! heads read, unknown models are refused, and heads change while serving
//! without a request ever seeing half a change; admission prices photos,
//! refuses past its budgets and the expected wait, and drops work whose
//! deadline passed before its decode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    let admission = Admission {
        max_queued_images: 64,
        ..Admission::default()
    };
    engine_with(classifier, admission, Arc::new(()))
}

/// [`engine`] with its admission and observer given.
fn engine_with(
    classifier: impl Fn(&Tensor) -> models::Result<models::Outputs> + Send + Sync + 'static,
    admission: Admission,
    observer: Arc<dyn engine::EngineObserver>,
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
    Engine::start(&repo, analyzer, &config, admission, observer).expect("starts")
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

/// One photo's admission, on an engine with room.
fn ticket(engine: &Engine) -> engine::admission::Ticket {
    engine
        .admit(engine.estimate(&png(64, 64, 200)), None)
        .expect("room")
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
        .analyze("p".into(), png(64, 64, 200), &faces_only, ticket(&engine))
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
        .analyze("p".into(), png(64, 64, 200), &captions, ticket(&engine))
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
        .analyze("p".into(), b"not a photo".to_vec(), &opts, ticket(&engine))
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
        tokio::spawn(async move {
            let ticket = ticket(&engine);
            engine
                .analyze("p".into(), png(64, 64, 200), &before, ticket)
                .await
        })
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
        .analyze("p".into(), png(64, 64, 200), &after, ticket(&engine))
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
                let photo = png(48, 48, 200);
                let ticket = engine.admit_waiting(engine.estimate(&photo)).await;
                let result = engine
                    .analyze(format!("{client}-{i}"), photo, &opts, ticket)
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

#[test]
fn photos_are_priced_by_what_their_decode_takes() {
    let engine = engine(classify);
    let small = engine.estimate(&png(64, 64, 200));
    let large = engine.estimate(&png(1024, 1024, 200));
    assert_eq!((small.photos, large.photos), (1, 1));
    // 256 times the pixels: more work, and its encoded bytes held.
    assert!(
        large.work_us > small.work_us + 1_000,
        "{small:?} vs {large:?}"
    );
    assert!(large.memory > small.memory, "{small:?} vs {large:?}");
    let unreadable = engine.estimate(b"not a photo");
    assert!(
        unreadable.work_us < small.work_us,
        "it fails at once: {unreadable:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_budget_refuses_what_would_pass_it_until_room_comes_back() {
    let engine = engine_with(
        classify,
        Admission {
            max_work_ms: 20,
            max_queue_wait: Duration::from_secs(60),
            ..Admission::default()
        },
        Arc::new(()),
    );
    let photo = png(64, 64, 200);
    let cost = engine.estimate(&photo);
    assert!(
        cost.work_us >= 14_000,
        "a photo costs its inference at least: {cost:?}"
    );
    // Alone, a photo is always admitted; a second passes 20 ms of work.
    let first = engine.admit(cost, None).expect("an empty engine admits");
    match engine.admit(cost, None) {
        Err(e @ EngineError::Overloaded { retry_after }) => {
            assert_eq!(e.code(), "overloaded");
            assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}");
        }
        other => panic!("expected overloaded, got {:?}", other.map(|t| t.cost())),
    }
    // Answering the first gives its room back.
    let opts = engine.options(None, AnalyzeOptions::default()).unwrap();
    engine
        .analyze("a".into(), photo.clone(), &opts, first)
        .await
        .unwrap();
    let second = engine
        .admit(cost, None)
        .expect("room once the first was answered");
    drop(second);
    assert_eq!(
        engine.admission_gauge().in_flight,
        Default::default(),
        "nothing held"
    );
}

#[test]
fn a_request_past_the_expected_wait_is_refused_with_that_wait() {
    let engine = engine_with(
        classify,
        Admission {
            max_queue_wait: Duration::from_millis(100),
            max_work_ms: 60_000,
            ..Admission::default()
        },
        Arc::new(()),
    );
    // 10 core-seconds in flight on 2 pool threads (2 core-seconds a second
    // before any is measured): 5 s of expected wait.
    let _held = engine
        .admit(engine::admission::Cost::new(10_000_000, 0, 1), None)
        .unwrap();
    match engine.admit(engine.estimate(&png(64, 64, 200)), None) {
        Err(EngineError::Overloaded { retry_after }) => {
            // Room once all but 0.1 s of it has drained: 4.9 s, in whole seconds.
            assert_eq!(retry_after, Duration::from_secs(5));
        }
        other => panic!("expected overloaded, got {:?}", other.map(|t| t.cost())),
    }
    // A deadline sooner than the wait is refused as such, at once.
    let deadline = Instant::now() + Duration::from_millis(50);
    match engine.admit(engine.estimate(&png(64, 64, 200)), Some(deadline)) {
        Err(e @ EngineError::DeadlineExceeded) => assert_eq!(e.code(), "deadline_exceeded"),
        other => panic!(
            "expected deadline_exceeded, got {:?}",
            other.map(|t| t.cost())
        ),
    }
}

/// Counts decodes.
#[derive(Default)]
struct Decodes(AtomicUsize);

impl engine::EngineObserver for Decodes {
    fn decoded(&self, _elapsed: Duration) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_whose_deadline_passes_while_queued_is_dropped_before_decode() {
    let decodes = Arc::new(Decodes::default());
    let engine = Arc::new(engine_with(classify, Admission::default(), decodes.clone()));
    // Both pool threads busy until the test says so: the photo queues.
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let mut blockers = Vec::new();
    for _ in 0..2 {
        let released = released.clone();
        let engine = engine.clone();
        blockers.push(tokio::spawn(async move {
            engine
                .on_pool(move || {
                    let _ = released
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(10));
                })
                .await
        }));
    }
    // A photo's request options and admission, with a deadline `ms` away.
    let with_deadline = |engine: &Engine, photo: &[u8], ms: u64| {
        let deadline = Instant::now() + Duration::from_millis(ms);
        let opts = engine
            .options(None, AnalyzeOptions::default())
            .unwrap()
            .with_deadline(Some(deadline));
        let ticket = engine
            .admit(engine.estimate(photo), Some(deadline))
            .unwrap();
        (opts, ticket)
    };
    let photo = png(64, 64, 200);
    let (opts, ticket) = with_deadline(&engine, &photo, 100);
    let queued = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.analyze("late".into(), photo, &opts, ticket).await })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    release.send(()).unwrap();
    release.send(()).unwrap();
    for b in blockers {
        b.await.unwrap().unwrap();
    }
    let e = queued.await.unwrap().unwrap_err();
    assert!(matches!(e, EngineError::DeadlineExceeded), "{e:?}");
    assert_eq!(e.code(), "deadline_exceeded");
    assert!(!e.is_permanent(), "another try may well make it");
    assert_eq!(decodes.0.load(Ordering::SeqCst), 0, "never decoded");
    assert_eq!(
        engine.admission_gauge().in_flight,
        Default::default(),
        "its room was given back"
    );

    // With time to spare, the same request is decoded and answered.
    let photo = png(64, 64, 200);
    let (opts, ticket) = with_deadline(&engine, &photo, 30_000);
    engine
        .analyze("on time".into(), photo, &opts, ticket)
        .await
        .unwrap();
    assert_eq!(decodes.0.load(Ordering::SeqCst), 1);
}
