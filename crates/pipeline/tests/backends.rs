//! The conformance suite of the metadata store and the work queue: one set
//! of tests, run against both pairs of backends —
//!
//! - `embedded`: SQLite for both, one fresh file per test under the
//!   system's temp directory;
//! - `scale_out`: PostgreSQL (a fresh schema per test) and NATS JetStream
//!   (a fresh stream prefix per test), at `PIPELINE_POSTGRES_URL` and
//!   `PIPELINE_NATS_URL`, defaulting to local servers.
//!
//! The scale-out tests fail (they do not skip) when the servers cannot be
//! reached: a suite that passes without running proves nothing. Run only
//! the embedded half with `cargo test -p pipeline --test backends embedded`.
//!
//! Events are checked through `MetaStore::read_events`, which both backends
//! have (the log embedded, the outbox scaled out): scaled out they reach
//! JetStream only through the relay, which is not part of this suite.

mod support {
    pub mod synthetic;
}

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pipeline::analysis::{Embedding, PhotoAnalysis, StoredEmbedding};
use pipeline::config::{MetadataConfig, QueueConfig};
use pipeline::event::{Event, EventKind};
use pipeline::job::{DeadJob, Job, JobKind};
use pipeline::photo::{
    HumanReview, NewPhoto, Original, PhotoRecord, StageEntry, Status, Submission, Transition,
};
use pipeline::queue::{Delivery, EventLog, JobQueue, QueueSettings};
use pipeline::rules::{Decision, Reason, Review, Uploader};
use pipeline::store::MetaStore;
use support::synthetic;

// ---------------------------------------------------------------------------
// The fixture

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Embedded,
    ScaleOut,
}

/// A store, a queue and an event log of one kind, fresh for one test.
struct Backends {
    store: MetaStore,
    queue: JobQueue,
    log: EventLog,
    cleanup: Cleanup,
}

/// What a test leaves behind, removed by [`Backends::finish`] when it
/// passes (a failed test's files, schema and streams are kept to look at).
enum Cleanup {
    Dir(PathBuf),
    ScaleOut {
        pg_url: String,
        schema: String,
        nats_url: String,
        prefix: String,
    },
}

/// A long lease, so that nothing is redelivered by accident in a slow run.
fn default_settings() -> QueueSettings {
    QueueSettings {
        lease: Duration::from_secs(30),
        max_deliver: 6,
    }
}

fn short_lease() -> QueueSettings {
    QueueSettings {
        lease: Duration::from_secs(1),
        max_deliver: 6,
    }
}

/// `t_<name>_<pid>_<time>`: unique per test and run, and short enough for
/// a PostgreSQL identifier (63 bytes) and a JetStream stream name.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    format!(
        "t_{name}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// Where the event log is read: the metadata store's `events` table
/// embedded, the `<prefix>_EVENTS` stream when the queue is NATS.
fn event_log(store: &MetaStore, queue: &JobQueue) -> EventLog {
    match queue {
        JobQueue::Nats(q) => EventLog::Nats(q.events()),
        JobQueue::Sqlite(_) => EventLog::Store(store.clone()),
    }
}

impl Backends {
    async fn open(mode: Mode, name: &str, settings: QueueSettings) -> Backends {
        match mode {
            Mode::Embedded => Backends::embedded(name, settings).await,
            Mode::ScaleOut => Backends::scale_out(name, settings).await,
        }
    }

    async fn embedded(name: &str, settings: QueueSettings) -> Backends {
        let dir = std::env::temp_dir().join(format!("darkroom-test-{}", unique(name)));
        // A directory that does not exist yet: open makes it.
        let metadata = MetadataConfig::Sqlite {
            path: dir.join("data").join("darkroom.db"),
        };
        let store = MetaStore::open(&metadata)
            .await
            .unwrap_or_else(|e| panic!("opening SQLite in {}: {e}", dir.display()));
        let queue = JobQueue::open(&QueueConfig::Sqlite {}, &store, settings)
            .await
            .unwrap_or_else(|e| panic!("opening the SQLite queue: {e}"));
        let log = event_log(&store, &queue);
        Backends {
            store,
            queue,
            log,
            cleanup: Cleanup::Dir(dir),
        }
    }

    async fn scale_out(name: &str, settings: QueueSettings) -> Backends {
        let pg_url = std::env::var("PIPELINE_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let nats_url =
            std::env::var("PIPELINE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let id = unique(name);
        let metadata = MetadataConfig::Postgres {
            url: pg_url.clone(),
            schema: id.clone(),
            connections: 4,
        };
        let store =
            match tokio::time::timeout(Duration::from_secs(20), MetaStore::open(&metadata)).await {
                Ok(Ok(store)) => store,
                Ok(Err(e)) => panic!(
                    "the scale-out tests need PostgreSQL at {pg_url} (set PIPELINE_POSTGRES_URL, \
                 or run only the embedded tests): {e}"
                ),
                Err(_) => panic!(
                    "the scale-out tests need PostgreSQL at {pg_url} (set PIPELINE_POSTGRES_URL): \
                 no answer in 20 s"
                ),
            };
        let config = QueueConfig::Nats {
            url: nats_url.clone(),
            prefix: id.clone(),
        };
        let queue = match tokio::time::timeout(
            Duration::from_secs(20),
            JobQueue::open(&config, &store, settings),
        )
        .await
        {
            Ok(Ok(queue)) => queue,
            Ok(Err(e)) => panic!(
                "the scale-out tests need NATS with JetStream at {nats_url} (set \
                 PIPELINE_NATS_URL, or run only the embedded tests): {e}"
            ),
            Err(_) => panic!(
                "the scale-out tests need NATS with JetStream at {nats_url} (set \
                 PIPELINE_NATS_URL): no answer in 20 s"
            ),
        };
        let log = event_log(&store, &queue);
        Backends {
            store,
            queue,
            log,
            cleanup: Cleanup::ScaleOut {
                pg_url,
                schema: id.clone(),
                nats_url,
                prefix: id,
            },
        }
    }

    /// Removes what the test made. Best effort: a server that is gone by
    /// now does not fail a test that passed.
    async fn finish(self) {
        let Backends {
            store,
            queue,
            log,
            cleanup,
        } = self;
        drop((store, queue, log));
        match cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::ScaleOut {
                pg_url,
                schema,
                nats_url,
                prefix,
            } => {
                let metadata = MetadataConfig::Postgres {
                    url: pg_url,
                    schema,
                    connections: 1,
                };
                let queue = QueueConfig::Nats {
                    url: nats_url,
                    prefix,
                };
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    pipeline::config::remove_deployment(&metadata, &queue),
                )
                .await;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn new_photo(id: &str, at_ms: i64) -> NewPhoto {
    NewPhoto {
        id: id.to_string(),
        submission: Submission {
            uploader: Uploader {
                id: Some("contributor-7".into()),
                release_on_file: false,
            },
            callback_url: Some("http://127.0.0.1:9/hook".into()),
        },
        original: Original {
            bytes: 123_456,
            format: "jpeg".into(),
            width: 640,
            height: 480,
        },
        by: "api".into(),
        at_ms,
    }
}

fn uploaded(p: &NewPhoto) -> Event {
    Event::for_step(
        &p.id,
        1,
        p.at_ms,
        EventKind::PhotoUploaded {
            submission: p.submission.clone(),
            original: p.original.clone(),
        },
    )
}

async fn insert(b: &Backends, id: &str, at_ms: i64) -> PhotoRecord {
    let p = new_photo(id, at_ms);
    let (record, created) = b.store.insert_photo(&p, &[uploaded(&p)]).await.unwrap();
    assert!(created, "{id} was new");
    record
}

/// Moves a photo on, asserting that the move happened.
async fn step(b: &Backends, id: &str, from: Status, to: Status, at_ms: i64) -> PhotoRecord {
    let t = Transition::new(id, from, to, "worker:test:1", at_ms);
    b.store
        .transition(&t)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{id}: {from} -> {to} did not apply"))
}

fn analysis(photo_id: &str) -> PhotoAnalysis {
    PhotoAnalysis {
        photo_id: photo_id.to_string(),
        concepts: vec![("beach".into(), 0.91), ("sunset".into(), 0.62)],
        confidence: 0.91,
        quality: Some(0.75),
        brisque: Some(21.5),
        faces: Vec::new(),
        model_release_required: false,
        captions: Vec::new(),
        embedding: None,
        size: [640, 480],
        decode_warnings: Vec::new(),
    }
}

fn review() -> Review {
    Review {
        decision: Decision::NeedsReview,
        reasons: vec![Reason::LowQuality {
            quality: 0.2,
            threshold: 0.3,
        }],
        accepted: vec![("beach".into(), 0.91)],
        suggested: vec![("sunset".into(), 0.62)],
    }
}

fn plain_event(id: &str, photo_id: &str, at_ms: i64) -> Event {
    Event {
        id: id.to_string(),
        at_ms,
        photo_id: photo_id.to_string(),
        kind: EventKind::PhotoPublished {},
    }
}

fn job(n: usize) -> Job {
    Job::process(&format!("photo{n}"), 1)
}

async fn all_events(b: &Backends) -> Vec<Event> {
    let logged = b.store.read_events(0, 10_000).await.unwrap();
    logged.into_iter().map(|l| l.event).collect()
}

fn ids(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

/// Pulls until `n` deliveries have come or `within` has passed: a pull may
/// return fewer than are ready (a JetStream fetch returns what has arrived).
async fn pull_n(q: &JobQueue, n: usize, within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        got.extend(q.pull(n - got.len(), left).await.unwrap());
    }
    got
}

async fn pull_one(q: &JobQueue, within: Duration) -> Delivery {
    let mut got = pull_n(q, 1, within).await;
    assert_eq!(got.len(), 1, "one delivery within {within:?}");
    got.remove(0)
}

async fn assert_nothing_to_pull(q: &JobQueue, wait: Duration) {
    let got = q.pull(10, wait).await.unwrap();
    let jobs: Vec<&Job> = got.iter().map(|d| &d.job).collect();
    assert!(jobs.is_empty(), "nothing deliverable, got {jobs:?}");
}

// ---------------------------------------------------------------------------
// The metadata store

async fn insert_is_idempotent(b: &Backends) {
    let p = new_photo("p1", 1_000);
    let (record, created) = b.store.insert_photo(&p, &[uploaded(&p)]).await.unwrap();
    assert!(created);
    assert_eq!(record.id, "p1");
    assert_eq!(record.status, Status::Stored);
    assert_eq!(
        record.history,
        vec![StageEntry {
            status: Status::Stored,
            at_ms: 1_000,
            by: "api".into(),
        }]
    );
    assert_eq!(record.submission, p.submission);
    assert_eq!(record.original, p.original);
    assert_eq!(record.analysis, None);
    assert_eq!(record.review, None);
    assert_eq!(record.human_review, None);
    assert!(record.keywords.is_empty());
    assert_eq!(record.error, None);
    assert_eq!((record.created_ms, record.updated_ms), (1_000, 1_000));

    // The same bytes again, with another submission: nothing changes, and
    // the second call's events are not written.
    let mut again = new_photo("p1", 2_000);
    again.submission.callback_url = None;
    again.by = "api:second".into();
    let second_event = plain_event("p1:second-upload", "p1", 2_000);
    let (record2, created2) = b.store.insert_photo(&again, &[second_event]).await.unwrap();
    assert!(!created2);
    assert_eq!(record2, record, "the first upload's record stays");
    assert_eq!(b.store.get("p1").await.unwrap(), Some(record.clone()));
    assert_eq!(b.store.list(None, None, 10).await.unwrap(), vec![record]);

    let events = all_events(b).await;
    assert_eq!(ids(&events), vec!["p1:1:photo.uploaded"]);
    assert_eq!(events[0], uploaded(&p));
}

async fn get_unknown_is_none(b: &Backends) {
    assert_eq!(b.store.get("no-such-photo").await.unwrap(), None);
    insert(b, "p1", 1).await;
    assert_eq!(b.store.get("p2").await.unwrap(), None);
    assert_eq!(b.store.get_dead("no-such-job").await.unwrap(), None);
}

async fn transition_is_compare_and_set(b: &Backends) {
    insert(b, "p1", 1_000).await;
    let mut t = Transition::new("p1", Status::Stored, Status::Analyzed, "worker:a:1", 2_000);
    t.events.push(Event::for_step(
        "p1",
        2,
        2_000,
        EventKind::PhotoAnalyzed {
            concepts: vec![("beach".into(), 0.91)],
            confidence: 0.91,
            quality: Some(0.75),
            faces: 0,
            model_release_required: false,
            captions: vec!["a beach".into()],
        },
    ));
    let record = b.store.transition(&t).await.unwrap().expect("applied");
    assert_eq!(record.status, Status::Analyzed);
    assert_eq!(record.updated_ms, 2_000);
    assert_eq!(record.created_ms, 1_000);
    assert_eq!(
        record.history.last(),
        Some(&StageEntry {
            status: Status::Analyzed,
            at_ms: 2_000,
            by: "worker:a:1".into(),
        })
    );
    assert_eq!(b.store.get("p1").await.unwrap(), Some(record.clone()));

    // The same stage again (a redelivered job): nothing happens.
    assert_eq!(b.store.transition(&t).await.unwrap(), None);
    let now = b.store.get("p1").await.unwrap().unwrap();
    assert_eq!(now, record);
    assert_eq!(now.history.len(), 2, "one history entry for the stage");

    // From a status the photo is not in: nothing is written, events included.
    let mut wrong = Transition::new("p1", Status::Stored, Status::Failed, "worker:b:1", 3_000);
    wrong.error = Some(Some("late".into()));
    wrong.events.push(plain_event("p1:wrong", "p1", 3_000));
    assert_eq!(b.store.transition(&wrong).await.unwrap(), None);
    assert_eq!(b.store.get("p1").await.unwrap(), Some(record));

    // A photo that does not exist.
    let mut missing = Transition::new("p9", Status::Stored, Status::Analyzed, "worker:a:1", 3_000);
    missing.events.push(plain_event("p9:missing", "p9", 3_000));
    assert_eq!(b.store.transition(&missing).await.unwrap(), None);

    let events = all_events(b).await;
    assert_eq!(
        ids(&events),
        vec!["p1:1:photo.uploaded", "p1:2:photo.analyzed"]
    );
    assert_eq!(events[1], t.events[0]);

    // Eight workers race for one move: exactly one makes it.
    let mut racers = Vec::new();
    for i in 0..8 {
        let store = b.store.clone();
        racers.push(tokio::spawn(async move {
            let mut t = Transition::new(
                "p1",
                Status::Analyzed,
                Status::Reviewed,
                &format!("worker:{i}:1"),
                4_000 + i,
            );
            t.events
                .push(plain_event(&format!("p1:race:{i}"), "p1", 4_000));
            store.transition(&t).await.unwrap().is_some()
        }));
    }
    let mut winners = 0;
    for r in racers {
        winners += usize::from(r.await.unwrap());
    }
    assert_eq!(winners, 1, "one of the racing transitions applied");
    let now = b.store.get("p1").await.unwrap().unwrap();
    assert_eq!(now.status, Status::Reviewed);
    assert_eq!(now.history.len(), 3);
    let race_events = all_events(b)
        .await
        .into_iter()
        .filter(|e| e.id.starts_with("p1:race:"))
        .count();
    assert_eq!(race_events, 1, "only the winner's events are written");
}

/// A chain of stages commits together: every history entry and event, or
/// (the photo not where the chain starts, or a link that does not follow)
/// nothing.
async fn transition_chains_commit_together(b: &Backends) {
    insert(b, "c1", 1_000).await;
    let link = |from, to, at_ms: i64| {
        let mut t = Transition::new("c1", from, to, "worker:a:1", at_ms);
        t.events.push(plain_event(
            &format!("c1:chain:{}", to.as_str()),
            "c1",
            at_ms,
        ));
        t
    };
    let mut analyzed = link(Status::Stored, Status::Analyzed, 2_000);
    analyzed.analysis = Some(analysis("c1"));
    let mut indexed = link(Status::Reviewed, Status::Indexed, 2_002);
    indexed.keywords = Some(vec!["beach".into(), "sea".into()]);
    let chain = vec![
        analyzed,
        link(Status::Analyzed, Status::Reviewed, 2_001),
        indexed,
        link(Status::Indexed, Status::Published, 2_003),
    ];
    // Broken in the middle (reviewed → published skips indexed): nothing.
    let broken = vec![chain[0].clone(), chain[1].clone(), chain[3].clone()];
    assert_eq!(b.store.transitions(&broken).await.unwrap(), None);
    let before = b.store.get("c1").await.unwrap().unwrap();
    assert_eq!(before.status, Status::Stored);
    assert!(all_events(b)
        .await
        .iter()
        .all(|e| !e.id.starts_with("c1:chain:")));

    let record = b.store.transitions(&chain).await.unwrap().expect("applied");
    assert_eq!(record.status, Status::Published);
    let stages: Vec<(Status, i64)> = record.history.iter().map(|e| (e.status, e.at_ms)).collect();
    assert_eq!(
        stages,
        vec![
            (Status::Stored, 1_000),
            (Status::Analyzed, 2_000),
            (Status::Reviewed, 2_001),
            (Status::Indexed, 2_002),
            (Status::Published, 2_003)
        ]
    );
    assert_eq!(b.store.get("c1").await.unwrap(), Some(record.clone()));
    assert_eq!(
        b.store.photos_with_keyword("sea", 10).await.unwrap(),
        vec!["c1".to_string()]
    );
    let written: Vec<String> = all_events(b)
        .await
        .into_iter()
        .filter(|e| e.id.starts_with("c1:chain:"))
        .map(|e| e.id)
        .collect();
    assert_eq!(
        written,
        [
            "c1:chain:analyzed",
            "c1:chain:reviewed",
            "c1:chain:indexed",
            "c1:chain:published"
        ]
    );
    // Again (a redelivered job): the photo has moved on, nothing happens.
    assert_eq!(b.store.transitions(&chain).await.unwrap(), None);
}

async fn transition_replaces_fields_and_indexes_keywords(b: &Backends) {
    insert(b, "p1", 1_000).await;
    insert(b, "p2", 1_001).await;

    let mut t = Transition::new("p1", Status::Stored, Status::Analyzed, "w", 2_000);
    t.analysis = Some(analysis("p1"));
    let r = b.store.transition(&t).await.unwrap().unwrap();
    assert_eq!(r.analysis, Some(analysis("p1")));

    let mut t = Transition::new("p1", Status::Analyzed, Status::Reviewed, "w", 3_000);
    t.review = Some(review());
    let r = b.store.transition(&t).await.unwrap().unwrap();
    assert_eq!(r.review, Some(review()));
    assert_eq!(r.analysis, Some(analysis("p1")), "None fields stay");

    let mut t = Transition::new("p1", Status::Reviewed, Status::Indexed, "w", 4_000);
    t.keywords = Some(vec!["beach".into(), "sunset".into()]);
    let r = b.store.transition(&t).await.unwrap().unwrap();
    assert_eq!(r.keywords, vec!["beach".to_string(), "sunset".to_string()]);
    assert_eq!(
        b.store.photos_with_keyword("beach", 10).await.unwrap(),
        vec!["p1"]
    );
    assert_eq!(
        b.store.photos_with_keyword("sunset", 10).await.unwrap(),
        vec!["p1"]
    );
    assert!(b
        .store
        .photos_with_keyword("dog", 10)
        .await
        .unwrap()
        .is_empty());

    step(b, "p2", Status::Stored, Status::Analyzed, 2_001).await;
    step(b, "p2", Status::Analyzed, Status::Reviewed, 3_001).await;
    let mut t = Transition::new("p2", Status::Reviewed, Status::Indexed, "w", 4_001);
    t.keywords = Some(vec!["beach".into()]);
    b.store.transition(&t).await.unwrap().unwrap();
    assert_eq!(
        b.store.photos_with_keyword("beach", 10).await.unwrap(),
        vec!["p1", "p2"],
        "in upload order"
    );
    assert_eq!(
        b.store.photos_with_keyword("beach", 1).await.unwrap(),
        vec!["p1"]
    );

    // No keywords in the transition: the index stays.
    let r = step(b, "p1", Status::Indexed, Status::NeedsReview, 5_000).await;
    assert_eq!(r.keywords, vec!["beach".to_string(), "sunset".to_string()]);
    assert_eq!(r.review, Some(review()));
    assert_eq!(
        b.store.photos_with_keyword("sunset", 10).await.unwrap(),
        vec!["p1"]
    );

    // A reviewer's decision rewrites the keywords: the struck one leaves
    // the index.
    let human = HumanReview {
        decision: Decision::Publish,
        accepted: vec!["sunset".into()],
        rejected: vec!["beach".into()],
        reviewer: "ana".into(),
        note: Some("fine".into()),
        at_ms: 6_000,
    };
    let mut t = Transition::new(
        "p1",
        Status::NeedsReview,
        Status::Reviewed,
        "reviewer:ana",
        6_000,
    );
    t.human_review = Some(human.clone());
    t.keywords = Some(vec!["sunset".into()]);
    let r = b.store.transition(&t).await.unwrap().unwrap();
    assert_eq!(r.human_review, Some(human));
    assert_eq!(r.keywords, vec!["sunset".to_string()]);
    assert_eq!(
        b.store.photos_with_keyword("beach", 10).await.unwrap(),
        vec!["p2"]
    );
    assert_eq!(
        b.store.photos_with_keyword("sunset", 10).await.unwrap(),
        vec!["p1"]
    );

    // The error is set, kept, and cleared with Some(None).
    let mut t = Transition::new("p1", Status::Reviewed, Status::Failed, "w", 7_000);
    t.error = Some(Some("callback refused".into()));
    let r = b.store.transition(&t).await.unwrap().unwrap();
    assert_eq!(r.error.as_deref(), Some("callback refused"));
    assert_eq!(r.resume_status(), Status::Reviewed);
    let r = step(b, "p1", Status::Failed, Status::Failed, 7_500).await;
    assert_eq!(
        r.error.as_deref(),
        Some("callback refused"),
        "None leaves it"
    );
    let mut t = Transition::new("p1", Status::Failed, Status::Reviewed, "api", 8_000);
    t.error = Some(None);
    let r = b.store.transition(&t).await.unwrap().unwrap();
    assert_eq!(r.error, None);

    // What transition returned is what is stored.
    assert_eq!(b.store.get("p1").await.unwrap(), Some(r.clone()));
    let statuses: Vec<Status> = r.history.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        vec![
            Status::Stored,
            Status::Analyzed,
            Status::Reviewed,
            Status::Indexed,
            Status::NeedsReview,
            Status::Reviewed,
            Status::Failed,
            Status::Failed,
            Status::Reviewed,
        ]
    );
    assert_eq!(r.updated_ms, 8_000);
}

async fn list_pages_in_seq_order(b: &Backends) {
    for i in 0..5 {
        insert(b, &format!("p{i}"), 1_000 + i).await;
    }
    step(b, "p1", Status::Stored, Status::Analyzed, 2_000).await;
    step(b, "p3", Status::Stored, Status::Analyzed, 2_000).await;

    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = b.store.list(None, after, 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|p| p.seq);
        pages.push(page.into_iter().map(|p| (p.id, p.seq)).collect::<Vec<_>>());
    }
    assert_eq!(pages.len(), 3, "5 photos in pages of 2: {pages:?}");
    let all: Vec<(String, i64)> = pages.concat();
    let names: Vec<&str> = all.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(names, vec!["p0", "p1", "p2", "p3", "p4"]);
    assert!(
        all.windows(2).all(|w| w[0].1 < w[1].1),
        "seq increases: {all:?}"
    );

    let stored: Vec<String> = b
        .store
        .list(Some(Status::Stored), None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(stored, vec!["p0", "p2", "p4"]);
    let first = b.store.list(Some(Status::Analyzed), None, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, "p1");
    let second = b
        .store
        .list(Some(Status::Analyzed), Some(first[0].seq), 1)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, "p3");
    assert!(b
        .store
        .list(Some(Status::Analyzed), Some(second[0].seq), 1)
        .await
        .unwrap()
        .is_empty());
    assert!(b
        .store
        .list(Some(Status::Published), None, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(b.store.list(None, None, 0).await.unwrap().is_empty());
}

fn embedding(version: &str, values: &[f32]) -> StoredEmbedding {
    StoredEmbedding {
        model: "effnet".into(),
        version: version.into(),
        vector: Embedding(values.to_vec()),
    }
}

/// The embedding is written with the analysis, in its transaction: a
/// transition that does not apply leaves none. It reads back bit for bit
/// (float32 bytes, not text); photos analysed without one are what a
/// backfill finds, and a backfilled one is stored once however often.
async fn embeddings_are_kept_with_the_analysis(b: &Backends) {
    let s = &b.store;
    insert(b, "e1", 1).await;
    insert(b, "e2", 2).await;
    assert_eq!(
        s.count_missing_embeddings("effnet", "v1").await.unwrap(),
        0,
        "nothing analysed"
    );
    // Values that text would round: the bytes must survive exactly.
    let first = embedding("v1", &[0.6, -0.8, 1e-38, f32::MIN_POSITIVE, -0.0, 0.1]);
    let mut t = Transition::new("e1", Status::Stored, Status::Analyzed, "worker:test:1", 3);
    t.analysis = Some(analysis("e1"));
    t.embedding = Some(first.clone());
    t.events.push(Event::embedded("e1", &first, 3));
    s.transition(&t).await.unwrap().expect("applies");
    let back = s
        .get_embedding("e1", Some("effnet"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, first);
    let bits = |e: &StoredEmbedding| e.vector.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&first), "bit for bit");
    assert_eq!(
        s.get_embedding("e1", None).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(s.get_embedding("e1", Some("other")).await.unwrap(), None);
    assert_eq!(s.get_embedding("e2", None).await.unwrap(), None);
    assert_eq!(s.get_embedding("nope", None).await.unwrap(), None);

    // A compare-and-set that loses writes no embedding either.
    let mut stale = t.clone();
    stale.embedding = Some(embedding("v1", &[1.0; 6]));
    assert!(s.transition(&stale).await.unwrap().is_none());
    assert_eq!(
        s.get_embedding("e1", None).await.unwrap(),
        Some(first.clone())
    );

    // e2 analysed without one: missing, for this version and the next.
    let mut t = Transition::new("e2", Status::Stored, Status::Analyzed, "worker:test:1", 4);
    t.analysis = Some(analysis("e2"));
    s.transition(&t).await.unwrap().expect("applies");
    let e2_seq = s.get("e2").await.unwrap().unwrap().seq;
    assert_eq!(
        s.missing_embeddings("effnet", "v1", i64::MIN, 10)
            .await
            .unwrap(),
        vec![(e2_seq, "e2".to_string())]
    );
    assert!(
        s.missing_embeddings("effnet", "v1", e2_seq, 10)
            .await
            .unwrap()
            .is_empty(),
        "after the cursor"
    );
    assert_eq!(s.count_missing_embeddings("effnet", "v1").await.unwrap(), 1);
    assert_eq!(s.count_missing_embeddings("effnet", "v2").await.unwrap(), 2);

    // Backfilled: stored once, one event, however often.
    let second = embedding("v1", &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    for at in [5, 6] {
        let event = Event::embedded("e2", &second, at);
        assert!(s.put_embedding("e2", &second, at, &[event]).await.unwrap());
    }
    assert!(
        !s.put_embedding("nope", &second, 7, &[]).await.unwrap(),
        "no such photo"
    );
    assert_eq!(s.get_embedding("e2", None).await.unwrap(), Some(second));
    assert_eq!(s.count_missing_embeddings("effnet", "v1").await.unwrap(), 0);
    // A new version replaces the model's embedding.
    let newer = embedding("v2", &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert!(s.put_embedding("e1", &newer, 8, &[]).await.unwrap());
    assert_eq!(
        s.get_embedding("e1", Some("effnet")).await.unwrap(),
        Some(newer)
    );
    let embedded = all_events(b)
        .await
        .iter()
        .filter(|e| e.kind.name() == "photo.embedded")
        .count();
    assert_eq!(
        embedded, 2,
        "one per photo and version stored with an event"
    );
}

async fn pending_and_count_by_status(b: &Backends) {
    assert_eq!(b.store.pending().await.unwrap(), 0);
    assert!(b.store.count_by_status().await.unwrap().is_empty());
    for i in 0..5 {
        insert(b, &format!("p{i}"), 1_000 + i).await;
    }
    step(b, "p1", Status::Stored, Status::Analyzed, 2_000).await;
    step(b, "p2", Status::Stored, Status::Indexed, 2_000).await;
    step(b, "p3", Status::Stored, Status::Published, 2_000).await;
    step(b, "p4", Status::Stored, Status::Failed, 2_000).await;
    assert_eq!(
        b.store.pending().await.unwrap(),
        3,
        "stored, analyzed, indexed"
    );
    let counts = b.store.count_by_status().await.unwrap();
    assert!(
        counts.iter().all(|(_, n)| *n > 0),
        "absent, not zero: {counts:?}"
    );
    let counts: BTreeMap<&str, u64> = counts.into_iter().map(|(s, n)| (s.as_str(), n)).collect();
    let expected: BTreeMap<&str, u64> = [
        ("stored", 1),
        ("analyzed", 1),
        ("indexed", 1),
        ("published", 1),
        ("failed", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expected);
}

fn dead(n: usize, attempts: u32, at_ms: i64) -> DeadJob {
    DeadJob {
        job: job(n),
        attempts,
        error: format!("error {n}"),
        at_ms,
        seq: 0,
    }
}

fn dead_event(d: &DeadJob) -> Event {
    Event::for_job(
        &d.job.id,
        d.attempts,
        &d.job.photo_id,
        d.at_ms,
        EventKind::JobDead {
            job_id: d.job.id.clone(),
            job: d.job.kind.clone(),
            attempts: d.attempts,
            error: d.error.clone(),
        },
    )
}

/// Compares all but the seq, which the store assigns.
fn same_dead(a: &DeadJob, b: &DeadJob) -> bool {
    (&a.job, a.attempts, &a.error, a.at_ms) == (&b.job, b.attempts, &b.error, b.at_ms)
}

async fn dead_letters_record_list_get_remove(b: &Backends) {
    assert!(b.store.list_dead(None, 10).await.unwrap().is_empty());
    let d = [dead(1, 5, 1_000), dead(2, 5, 1_001), dead(3, 1, 1_002)];
    for x in &d {
        b.store.record_dead(x, &[dead_event(x)]).await.unwrap();
    }
    let listed = b.store.list_dead(None, 10).await.unwrap();
    assert_eq!(listed.len(), 3);
    for (got, want) in listed.iter().zip(&d) {
        assert!(same_dead(got, want), "{got:?} is {want:?}");
    }
    assert!(
        listed.windows(2).all(|w| w[0].seq < w[1].seq),
        "seq increases"
    );

    // Paging with the seq cursor.
    let page1 = b.store.list_dead(None, 2).await.unwrap();
    assert_eq!(page1.len(), 2);
    let page2 = b.store.list_dead(Some(page1[1].seq), 2).await.unwrap();
    assert_eq!(page2.len(), 1);
    assert!(same_dead(&page2[0], &d[2]));
    assert!(b
        .store
        .list_dead(Some(page2[0].seq), 2)
        .await
        .unwrap()
        .is_empty());

    let got = b.store.get_dead(&d[1].job.id).await.unwrap().unwrap();
    assert!(same_dead(&got, &d[1]));
    assert_eq!(got.seq, listed[1].seq);

    // Dead again after a retry: replaced, and to the end of the list.
    let again = dead(1, 6, 2_000);
    b.store
        .record_dead(&again, &[dead_event(&again)])
        .await
        .unwrap();
    let listed = b.store.list_dead(None, 10).await.unwrap();
    let order: Vec<&str> = listed.iter().map(|x| x.job.id.as_str()).collect();
    assert_eq!(
        order,
        vec![
            d[1].job.id.as_str(),
            d[2].job.id.as_str(),
            again.job.id.as_str()
        ]
    );
    assert!(same_dead(&listed[2], &again));
    assert!(listed[2].seq > listed[1].seq, "a new seq");

    // Removed with its event; a second remove finds nothing.
    let retried = Event::for_job(
        &d[1].job.id,
        d[1].attempts + 1,
        &d[1].job.photo_id,
        3_000,
        EventKind::JobRetried {
            job_id: d[1].job.id.clone(),
            new_job_id: "process:photo2:3".into(),
        },
    );
    assert!(b
        .store
        .remove_dead(&d[1].job.id, std::slice::from_ref(&retried))
        .await
        .unwrap());
    assert!(!b
        .store
        .remove_dead(&d[1].job.id, std::slice::from_ref(&retried))
        .await
        .unwrap());
    assert_eq!(b.store.get_dead(&d[1].job.id).await.unwrap(), None);
    let order: Vec<String> = b
        .store
        .list_dead(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.job.id)
        .collect();
    assert_eq!(order, vec![d[2].job.id.clone(), again.job.id.clone()]);

    let events = all_events(b).await;
    assert_eq!(
        ids(&events),
        vec![
            dead_event(&d[0]).id.as_str(),
            dead_event(&d[1]).id.as_str(),
            dead_event(&d[2]).id.as_str(),
            dead_event(&again).id.as_str(),
            retried.id.as_str(),
        ]
    );
}

async fn append_events_skips_duplicate_ids(b: &Backends) {
    let e: Vec<Event> = (0..3)
        .map(|i| plain_event(&format!("e{i}"), "p1", i))
        .collect();
    b.store.append_events(&e[0..2]).await.unwrap();
    b.store.append_events(&e[1..3]).await.unwrap();
    b.store.append_events(&[]).await.unwrap();
    // A duplicate with another body is still the first one.
    let mut changed = e[0].clone();
    changed.at_ms = 99;
    b.store.append_events(&[changed]).await.unwrap();
    assert_eq!(all_events(b).await, e);
}

async fn read_events_in_order(b: &Backends) {
    let p = new_photo("p1", 1_000);
    b.store.insert_photo(&p, &[uploaded(&p)]).await.unwrap();
    let mut want = vec![uploaded(&p)];
    for i in 0..4 {
        let batch: Vec<Event> = (0..2)
            .map(|j| plain_event(&format!("e{i}.{j}"), "p1", 2_000 + i))
            .collect();
        b.store.append_events(&batch).await.unwrap();
        want.extend(batch);
    }
    let mut t = Transition::new("p1", Status::Stored, Status::Analyzed, "w", 3_000);
    t.events = vec![
        plain_event("t.0", "p1", 3_000),
        plain_event("t.1", "p1", 3_000),
    ];
    b.store.transition(&t).await.unwrap().unwrap();
    want.extend(t.events.clone());

    let logged = b.store.read_events(0, 100).await.unwrap();
    let got: Vec<Event> = logged.iter().map(|l| l.event.clone()).collect();
    assert_eq!(got, want);
    assert!(logged[0].seq > 0, "seq starts after 0");
    assert!(
        logged.windows(2).all(|w| w[0].seq < w[1].seq),
        "seq increases"
    );

    // Paging from a seq gives the same events.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = b.store.read_events(after, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = page.last().unwrap().seq;
        paged.extend(page);
    }
    assert_eq!(paged, logged);

    // The relay deletes what it published; the rest stay in order.
    let gone: Vec<u64> = logged[..3].iter().map(|l| l.seq).collect();
    b.store.delete_events(&gone).await.unwrap();
    b.store.delete_events(&[]).await.unwrap();
    let rest = b.store.read_events(0, 100).await.unwrap();
    assert_eq!(rest, logged[3..].to_vec());

    // Embedded, the store's events table is the event log itself.
    if let EventLog::Store(_) = &b.log {
        assert_eq!(b.log.read(0, 100).await.unwrap(), rest);
    }
}

// ---------------------------------------------------------------------------
// The work queue

async fn queue_push_pull_ack(b: &Backends) {
    let q = &b.queue;
    assert_eq!(q.depth().await.unwrap(), 0);
    let callback = Job::callback("photo9", Status::Published, 6);
    q.push(&job(1)).await.unwrap();
    q.push(&callback).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 2);

    let got = pull_n(q, 2, Duration::from_secs(5)).await;
    let jobs: Vec<&Job> = got.iter().map(|d| &d.job).collect();
    assert_eq!(
        jobs,
        vec![&job(1), &callback],
        "in the order pushed, intact"
    );
    assert!(got.iter().all(|d| d.attempt == 1), "first deliveries");
    assert_eq!(q.depth().await.unwrap(), 2, "leased jobs are still queued");
    assert_nothing_to_pull(q, Duration::from_millis(200)).await;

    for d in got {
        q.ack(d).await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 0);
    assert_nothing_to_pull(q, Duration::from_millis(200)).await;
}

async fn queue_push_twice_delivers_once(b: &Backends) {
    let q = &b.queue;
    q.push(&job(1)).await.unwrap();
    q.push(&job(1)).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 1);
    let d = pull_one(q, Duration::from_secs(5)).await;
    assert_eq!((d.job.clone(), d.attempt), (job(1), 1));
    // Pushed again while a worker holds it: still one job.
    q.push(&job(1)).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 1);
    assert_nothing_to_pull(q, Duration::from_millis(300)).await;
    q.ack(d).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
}

async fn queue_retry_waits_for_its_delay(b: &Backends) {
    let q = &b.queue;
    q.push(&job(1)).await.unwrap();
    let d = pull_one(q, Duration::from_secs(5)).await;
    assert_eq!(d.attempt, 1);
    let delay = Duration::from_millis(1_500);
    let retried_at = Instant::now();
    q.retry(d, delay).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 1, "waiting for its retry");
    assert_nothing_to_pull(q, Duration::from_millis(600)).await;

    let d = pull_one(q, Duration::from_secs(6)).await;
    let waited = retried_at.elapsed();
    assert!(
        waited >= delay - Duration::from_millis(100),
        "redelivered after {waited:?}, before its {delay:?} delay"
    );
    assert_eq!((d.job.clone(), d.attempt), (job(1), 2));
    q.ack(d).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
}

async fn queue_expired_lease_is_redelivered(b: &Backends) {
    // Opened with a lease of 1 s.
    let q = &b.queue;
    q.push(&job(1)).await.unwrap();
    let first = pull_one(q, Duration::from_secs(5)).await;
    let leased_at = Instant::now();
    assert_eq!(first.attempt, 1);
    // The worker died: its lease runs out and another worker gets the job.
    let second = pull_one(q, Duration::from_secs(8)).await;
    let waited = leased_at.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "redelivered after {waited:?}, within its 1 s lease"
    );
    assert_eq!((second.job.clone(), second.attempt), (job(1), 2));

    // The first worker wakes up and acks: the job is not its to settle.
    q.ack(first).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 1, "a stale ack removes nothing");
    q.ack(second).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
}

async fn queue_release_redelivers_at_once(b: &Backends) {
    let q = &b.queue;
    q.push(&job(1)).await.unwrap();
    let d = pull_one(q, Duration::from_secs(5)).await;
    let released_at = Instant::now();
    q.release(d).await.unwrap();
    // Not after the 30 s lease: now.
    let d = pull_one(q, Duration::from_secs(5)).await;
    assert!(released_at.elapsed() < Duration::from_secs(3));
    assert_eq!(d.job, job(1));
    if b.queue.kind() == "sqlite" {
        // The job table takes the hand-back's delivery back; JetStream
        // counts every delivery, so there it may be 2.
        assert_eq!(d.attempt, 1, "a release does not count as an attempt");
    } else {
        assert!(d.attempt <= 2, "attempt {}", d.attempt);
    }
    q.ack(d).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
}

async fn queue_dead_removes_the_job(b: &Backends) {
    let q = &b.queue;
    q.push(&job(1)).await.unwrap();
    q.push(&job(2)).await.unwrap();
    let d = pull_one(q, Duration::from_secs(5)).await;
    assert_eq!(d.job, job(1));
    let record = DeadJob {
        job: d.job.clone(),
        attempts: d.attempt,
        error: "permanent".into(),
        at_ms: 1_000,
        seq: 0,
    };
    b.store.record_dead(&record, &[]).await.unwrap();
    q.dead(d, &record).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 1);
    let d = pull_one(q, Duration::from_secs(5)).await;
    assert_eq!(d.job, job(2), "the dead job is not delivered again");
    q.ack(d).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
    assert_nothing_to_pull(q, Duration::from_millis(200)).await;
}

async fn queue_depth_counts_every_queued_job(b: &Backends) {
    let q = &b.queue;
    for n in 1..=3 {
        q.push(&job(n)).await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 3);
    let a = pull_one(q, Duration::from_secs(5)).await;
    assert_eq!(q.depth().await.unwrap(), 3, "leased counts");
    q.retry(a, Duration::from_secs(60)).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 3, "waiting for a retry counts");
    let c = pull_one(q, Duration::from_secs(5)).await;
    assert_eq!(c.job, job(2));
    q.ack(c).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 2);
}

async fn queue_pull_waits_then_returns_empty(b: &Backends) {
    let q = &b.queue;
    let started = Instant::now();
    assert!(q
        .pull(5, Duration::from_millis(700))
        .await
        .unwrap()
        .is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(650) && waited < Duration::from_millis(3_000),
        "an empty pull waits about its wait, not {waited:?}"
    );

    // A push while a worker waits wakes it well before its wait is up.
    let waiting = {
        let q = q.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = q.pull(1, Duration::from_secs(10)).await.unwrap();
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.push(&job(1)).await.unwrap();
    let (got, waited) = waiting.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(waited < Duration::from_secs(3), "woken after {waited:?}");
    for d in got {
        q.ack(d).await.unwrap();
    }
}

async fn queue_concurrent_pullers_share_the_jobs(b: &Backends) {
    let q = &b.queue;
    for n in 0..20 {
        q.push(&job(n)).await.unwrap();
    }
    let mut workers = Vec::new();
    for _ in 0..4 {
        let q = q.clone();
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut idle = 0;
            while idle < 2 {
                let got = q.pull(3, Duration::from_millis(300)).await.unwrap();
                if got.is_empty() {
                    idle += 1;
                    continue;
                }
                idle = 0;
                for d in got {
                    assert_eq!(d.attempt, 1, "{} delivered again", d.job.id);
                    seen.push(d.job.id.clone());
                    q.ack(d).await.unwrap();
                }
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 20, "each job delivered once: {all:?}");
    assert_eq!(distinct.len(), 20);
    assert_eq!(q.depth().await.unwrap(), 0);
}

/// Trained concepts: versions numbered per concept, one training at a
/// time, weights read back as served, activation, backfilled scores only
/// for the active version, the embedding reads training needs, reviewers'
/// verdicts as labels, and deletion; each change with its event.
async fn concepts_are_versioned_served_and_deleted(b: &Backends) {
    use pipeline::concept::{Backfill, TrainingSpec, VersionStatus};
    use pipeline::store::ConceptScore;
    let s = &b.store;
    for (i, id) in ["c1", "c2", "c3"].iter().enumerate() {
        insert(b, id, i as i64).await;
        let e = embedding("v1", &[i as f32, 1.0]);
        assert!(s.put_embedding(id, &e, 10, &[]).await.unwrap());
    }
    let spec = TrainingSpec {
        positives: vec!["c1".into(), "c2".into()],
        negatives: vec!["c3".into()],
        target_precision: 0.9,
        activate: true,
        model: "effnet".into(),
        from_review: 0,
    };
    assert_eq!(
        s.begin_concept_version("forest", &spec, 100).await.unwrap(),
        Ok(1)
    );
    // One training at a time per concept; other concepts are free.
    assert_eq!(
        s.begin_concept_version("forest", &spec, 101).await.unwrap(),
        Err(1)
    );
    assert_eq!(
        s.begin_concept_version("lake", &spec, 102).await.unwrap(),
        Ok(1)
    );
    let forest = s.get_concept("forest").await.unwrap().expect("created");
    assert_eq!(forest.active, None);
    assert_eq!(forest.training(), Some(1));
    assert_eq!(
        s.concept_spec("forest", 1).await.unwrap(),
        Some(spec.clone())
    );
    assert_eq!(
        s.concept_head("forest", 1).await.unwrap(),
        None,
        "not trained yet"
    );

    let mut v1 = forest.versions[0].clone();
    v1.status = VersionStatus::Ready;
    v1.metrics = Some(learn::Metrics {
        precision: 1.0,
        recall: 1.0,
        f1: 1.0,
        ap: 1.0,
        threshold: 0.5,
        meets_target: true,
        positives: 2,
        negatives: 1,
        background_negatives: 0,
        folds: 2,
        l2: 0.1,
    });
    v1.activated_at = Some(104);
    let weights = [0.25f32, -0.5];
    // A version of another incarnation (same number, other createdAt) is
    // not written to.
    let mut stale = v1.clone();
    stale.created_at += 1;
    assert!(!s
        .update_training("forest", &stale, Some((&weights, 0.125)), true, &[])
        .await
        .unwrap());
    assert!(s
        .update_training("forest", &v1, Some((&weights, 0.125)), true, &[])
        .await
        .unwrap());
    // Once ready, a duplicate training job's writes change nothing.
    let mut late = forest.versions[0].clone();
    late.progress = None;
    assert!(!s
        .update_training("forest", &late, None, false, &[])
        .await
        .unwrap());
    assert_eq!(
        s.get_concept("forest").await.unwrap().unwrap().versions[0].status,
        VersionStatus::Ready
    );
    assert_eq!(
        s.active_concepts().await.unwrap(),
        vec![("forest".to_string(), 1, 104)]
    );
    let head = s.concept_head("forest", 1).await.unwrap().expect("trained");
    assert_eq!(
        (head.weights.as_slice(), head.bias, head.threshold),
        (&weights[..], 0.125, 0.5)
    );
    assert_eq!(
        s.begin_concept_version("forest", &spec, 103).await.unwrap(),
        Ok(2)
    );
    assert_eq!(
        s.activate_concept("forest", 9, 105, &[]).await.unwrap(),
        None,
        "no version 9"
    );
    assert_eq!(
        s.activate_concept("forest", 2, 105, &[]).await.unwrap(),
        None,
        "v2 is training"
    );
    assert_eq!(
        s.activate_concept("nothing", 1, 105, &[]).await.unwrap(),
        None
    );

    // The reads training and backfill make.
    let ids: Vec<String> = ["c3", "zz", "c1"].iter().map(|s| s.to_string()).collect();
    let mut found: Vec<String> = s
        .embeddings_of(&ids, "effnet")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    found.sort();
    assert_eq!(found, ["c1", "c3"]);
    assert!(s.embeddings_of(&ids, "other").await.unwrap().is_empty());
    let mut with = s.with_embedding(&ids, "effnet").await.unwrap();
    with.sort();
    assert_eq!(with, ["c1", "c3"], "the same answer, ids only");
    assert!(s.with_embedding(&ids, "other").await.unwrap().is_empty());
    let background: Vec<String> = s
        .background_embeddings("effnet", 2)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(background, ["c1", "c2"], "by id");
    assert_eq!(s.count_embeddings("effnet").await.unwrap(), 3);
    let page = s.embeddings_page("effnet", 0, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[1].2 .0, vec![1.0, 1.0]);
    let rest = s.embeddings_page("effnet", page[1].0, 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["c3"]
    );

    // Scores are written for the active version only.
    let mut scored = v1.clone();
    scored.backfill = Some(Backfill {
        done: 2,
        total: 3,
        tagged: 1,
        cursor: page[1].0,
        finished: false,
        photos_per_second: None,
    });
    let scores: Vec<ConceptScore> = page
        .iter()
        .map(|(seq, id, _)| ConceptScore {
            photo_seq: *seq,
            photo_id: id.clone(),
            score: 0.75,
        })
        .collect();
    assert!(s
        .save_concept_scores("forest", &scored, &scores, &[])
        .await
        .unwrap());
    assert_eq!(s.concept_score("forest", "c2").await.unwrap(), Some(0.75));
    assert_eq!(s.concept_score("forest", "c3").await.unwrap(), None);
    let back = s.get_concept("forest").await.unwrap().unwrap();
    assert_eq!(
        back.version(1).unwrap().backfill.as_ref().unwrap().cursor,
        page[1].0
    );
    let mut stale = scored.clone();
    stale.version = 2;
    assert!(
        !s.save_concept_scores("forest", &stale, &scores, &[])
            .await
            .unwrap(),
        "v2 is not active"
    );
    assert_eq!(
        s.concept_scores_of("c1").await.unwrap(),
        vec![("forest".to_string(), 1, 0.75)]
    );
    // One concept's scores in upload order, a page at a time.
    let first = s.concept_scores_page("forest", 0, 1).await.unwrap();
    assert_eq!(
        first,
        vec![(page[0].0, page[0].1.clone(), 1, 0.75)],
        "the first page"
    );
    let rest = s
        .concept_scores_page("forest", first[0].0, 10)
        .await
        .unwrap();
    assert_eq!(rest, vec![(page[1].0, page[1].1.clone(), 1, 0.75)]);
    assert!(s
        .concept_scores_page("ocean", 0, 10)
        .await
        .unwrap()
        .is_empty());
    // Activated again: the old activation's backfill writes no more, and
    // the new one starts from nothing.
    let again = s
        .activate_concept("forest", 1, 106, &[])
        .await
        .unwrap()
        .expect("ready");
    assert_eq!(
        (again.activated_at, again.backfill.as_ref()),
        (Some(106), None)
    );
    assert!(!s
        .save_concept_scores("forest", &scored, &scores, &[])
        .await
        .unwrap());
    assert_eq!(
        s.active_concepts().await.unwrap(),
        vec![("forest".to_string(), 1, 106)]
    );

    // Reviewers' verdicts on the keyword, by photo.
    synthetic::review(s, "c1", &["forest"], &[], 20).await;
    synthetic::review(s, "c2", &["forest path"], &["forest"], 20).await;
    assert_eq!(
        s.review_labels("forest").await.unwrap(),
        vec![("c1".to_string(), true), ("c2".to_string(), false)]
    );
    assert!(s.review_labels("lake").await.unwrap().is_empty());

    let names: Vec<String> = s
        .list_concepts()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["forest", "lake"]);
    assert!(s.delete_concept("forest", &[]).await.unwrap());
    assert!(!s.delete_concept("forest", &[]).await.unwrap());
    assert_eq!(s.get_concept("forest").await.unwrap(), None);
    assert_eq!(s.concept_score("forest", "c1").await.unwrap(), None);
    assert!(s.active_concepts().await.unwrap().is_empty());
    let events = all_events(b).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e.kind.name())
        .filter(|t| t.starts_with("concept."))
        .collect();
    assert_eq!(
        types, ["concept.training"; 3],
        "one event per version begun"
    );
}

/// People's feedback: the last signal per user and photo wins, each with
/// its event; newest first, a page at a time; unknown photos refused.
async fn feedback_last_signal_wins(b: &Backends) {
    use pipeline::feedback::{Feedback, Signal};
    for (i, id) in ["f1", "f2", "f3"].iter().enumerate() {
        insert(b, id, 1_000 + i as i64).await;
    }
    let give = |user: &str, photo: &str, signal: Signal, at_ms: i64| Feedback {
        user: user.into(),
        photo_id: photo.into(),
        signal,
        at_ms,
    };
    let s = &b.store;
    assert!(s
        .give_feedback(&give("ana", "f1", Signal::Like, 10))
        .await
        .unwrap());
    assert!(s
        .give_feedback(&give("ana", "f2", Signal::Skip, 11))
        .await
        .unwrap());
    assert!(s
        .give_feedback(&give("ana", "f3", Signal::Pick, 12))
        .await
        .unwrap());
    assert!(s
        .give_feedback(&give("bo", "f1", Signal::Dislike, 13))
        .await
        .unwrap());
    // Changed her mind: the row is replaced, and a new event says so.
    assert!(s
        .give_feedback(&give("ana", "f1", Signal::Dislike, 14))
        .await
        .unwrap());
    assert!(!s
        .give_feedback(&give("ana", "nope", Signal::Like, 15))
        .await
        .unwrap());

    let first = s.feedback_of("ana", None, 2).await.unwrap();
    let signals = |rows: &[(i64, Feedback)]| {
        rows.iter()
            .map(|(_, f)| (f.photo_id.clone(), f.signal))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        signals(&first),
        [
            ("f1".to_string(), Signal::Dislike),
            ("f3".to_string(), Signal::Pick)
        ]
    );
    let cursor = (first[1].1.at_ms, first[1].0);
    let rest = s.feedback_of("ana", Some(cursor), 10).await.unwrap();
    assert_eq!(signals(&rest), [("f2".to_string(), Signal::Skip)]);
    assert!(s.feedback_of("cy", None, 10).await.unwrap().is_empty());
    // Every user's signal on one photo, and everything in upload order.
    let on_f1: Vec<(String, Signal)> = s
        .feedback_on("f1")
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.user, f.signal))
        .collect();
    assert_eq!(
        on_f1,
        [
            ("ana".to_string(), Signal::Dislike),
            ("bo".to_string(), Signal::Dislike)
        ]
    );
    assert!(s.feedback_on("nope").await.unwrap().is_empty());
    let mut everything = Vec::new();
    let mut after = None;
    loop {
        let page = s.feedback_page(after.clone(), 3).await.unwrap();
        let Some((seq, last)) = page.last() else {
            break;
        };
        after = Some((*seq, last.user.clone()));
        everything.extend(
            page.into_iter()
                .map(|(_, f)| format!("{}/{}", f.photo_id, f.user)),
        );
    }
    assert_eq!(everything, ["f1/ana", "f1/bo", "f2/ana", "f3/ana"]);

    let given: Vec<(String, String)> = all_events(b)
        .await
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::FeedbackGiven { user, signal } => Some((
                format!("{user}/{}", e.photo_id),
                signal.as_str().to_string(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(given.len(), 5, "{given:?}");
    assert_eq!(given[4], ("ana/f1".to_string(), "dislike".to_string()));
}

// ---------------------------------------------------------------------------
// The suite, once per pair of backends

/// The settings a test opens its queue with: the default, or the given ones.
macro_rules! settings_or_default {
    () => {
        default_settings()
    };
    ($settings:expr) => {
        $settings
    };
}

macro_rules! conformance {
    ($mode:expr; $($test:ident $(with $settings:expr)?),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let settings = settings_or_default!($($settings)?);
                let b = Backends::open($mode, stringify!($test), settings).await;
                super::$test(&b).await;
                b.finish().await;
            }
        )*
    };
}

macro_rules! suite {
    ($mode:expr) => {
        use super::*;
        conformance!($mode;
            insert_is_idempotent,
            get_unknown_is_none,
            transition_is_compare_and_set,
            transition_chains_commit_together,
            transition_replaces_fields_and_indexes_keywords,
            list_pages_in_seq_order,
            pending_and_count_by_status,
            embeddings_are_kept_with_the_analysis,
            concepts_are_versioned_served_and_deleted,
            feedback_last_signal_wins,
            dead_letters_record_list_get_remove,
            append_events_skips_duplicate_ids,
            read_events_in_order,
            queue_push_pull_ack,
            queue_push_twice_delivers_once,
            queue_retry_waits_for_its_delay,
            queue_expired_lease_is_redelivered with short_lease(),
            queue_release_redelivers_at_once,
            queue_dead_removes_the_job,
            queue_depth_counts_every_queued_job,
            queue_pull_waits_then_returns_empty,
            queue_concurrent_pullers_share_the_jobs,
        );
    };
}

/// SQLite for the store and the queue.
mod embedded {
    suite!(Mode::Embedded);
}

/// PostgreSQL and NATS JetStream.
mod scale_out {
    suite!(Mode::ScaleOut);
}

// ---------------------------------------------------------------------------
// SQLite only: what only an embedded deployment can do

/// Processes sharing the file (the API and workers), each with its own
/// connections: what one writes the other reads, a push in one is pulled
/// by the other without a wake-up, and they race for transitions safely.
mod embedded_shared_file {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_handles_on_one_file() {
        let b = Backends::open(Mode::Embedded, "shared_file", default_settings()).await;
        let Cleanup::Dir(dir) = &b.cleanup else {
            unreachable!()
        };
        let metadata = MetadataConfig::Sqlite {
            path: dir.join("data").join("darkroom.db"),
        };
        let other = MetaStore::open(&metadata).await.unwrap();
        let other_q = JobQueue::open(&QueueConfig::Sqlite {}, &other, default_settings())
            .await
            .unwrap();

        insert(&b, "p1", 1_000).await;
        assert_eq!(other.get("p1").await.unwrap().unwrap().id, "p1");

        // Pushed here, pulled there: no Notify crosses processes, the poll does.
        let waiting = {
            let other_q = other_q.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                (
                    other_q.pull(1, Duration::from_secs(5)).await.unwrap(),
                    started.elapsed(),
                )
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.queue.push(&job(1)).await.unwrap();
        let (got, waited) = waiting.await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            waited < Duration::from_secs(2),
            "found by polling after {waited:?}"
        );
        assert_nothing_to_pull(&b.queue, Duration::from_millis(100)).await;
        for d in got {
            other_q.ack(d).await.unwrap();
        }
        assert_eq!(b.queue.depth().await.unwrap(), 0);

        // Both handles race for the same move, many times.
        for i in 0..10 {
            let id = format!("r{i}");
            insert(&b, &id, 2_000 + i).await;
            let t = Transition::new(&id, Status::Stored, Status::Analyzed, "w", 3_000);
            let (x, y) = tokio::join!(b.store.transition(&t), other.transition(&t));
            let applied = usize::from(x.unwrap().is_some()) + usize::from(y.unwrap().is_some());
            assert_eq!(applied, 1, "{id}: one of the two applied");
            assert_eq!(b.store.get(&id).await.unwrap().unwrap().history.len(), 2);
        }
        drop((other, other_q));
        b.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_job_is_skipped_not_lost() {
        let b = Backends::open(Mode::Embedded, "unreadable_job", default_settings()).await;
        let Cleanup::Dir(dir) = &b.cleanup else {
            unreachable!()
        };
        // A job row from a newer version, with a kind this one lacks.
        let conn = rusqlite::Connection::open(dir.join("data").join("darkroom.db")).unwrap();
        conn.execute(
            "INSERT INTO jobs (id, body, attempts, available_at_ms, created_ms) \
             VALUES ('future:1', '{\"id\":\"future:1\",\"photoId\":\"p\",\"kind\":\"teleport\"}', 0, 0, 0)",
            [],
        )
        .unwrap();
        drop(conn);
        b.queue.push(&job(1)).await.unwrap();
        let got = pull_n(&b.queue, 2, Duration::from_millis(500)).await;
        let jobs: Vec<&Job> = got.iter().map(|d| &d.job).collect();
        assert_eq!(jobs, vec![&job(1)]);
        assert!(matches!(jobs[0].kind, JobKind::Process));
        assert_eq!(
            b.queue.depth().await.unwrap(),
            2,
            "the unreadable job is kept"
        );
        for d in got {
            b.queue.ack(d).await.unwrap();
        }
        b.finish().await;
    }
}
