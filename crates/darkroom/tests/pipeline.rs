//! Crash tests of the reviewing pipeline with real processes: one
//! `darkroom serve --role api` and `--role worker` processes sharing the
//! stores. A worker is killed with SIGKILL in the middle of its jobs (and,
//! scaled out, the NATS server is killed and restarted too); a new worker
//! starts; every photo reaches an outcome, none has two results, and
//! nothing is left in the queue.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use models::Home;
use pipeline::{EventLog, JobQueue, MetaStore, MetadataConfig, QueueConfig, QueueSettings};
use serde_json::Value;

const OUTCOMES: [&str; 4] = ["published", "needs_review", "rejected", "failed"];

/// The camera photos (12 JPEGs of about 3 MP).
fn photos(home: &Home) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(home.camera_photos())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 8,
        "camera photos in {}",
        home.camera_photos().display()
    );
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn upload_all(api: &Served, photos: &[Vec<u8>]) -> Vec<String> {
    photos
        .iter()
        .map(|photo| {
            let (status, body) = http(&api.address, &post("/v1/photos", "image/jpeg", photo));
            assert_eq!(status, 202, "{body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            body["id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Every photo's record, by id.
fn records(api: &Served) -> BTreeMap<String, Value> {
    let (status, body) = http(&api.address, &get("/v1/photos?limit=500"));
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["photos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p.clone()))
        .collect()
}

fn status(photo: &Value) -> &str {
    photo["status"].as_str().unwrap()
}

/// Waits until `done` holds for the records, or panics after `limit`.
fn wait_until(
    api: &Served,
    limit: Duration,
    what: &str,
    done: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    let started = Instant::now();
    loop {
        let records = records(api);
        if done(&records) {
            return records;
        }
        assert!(
            started.elapsed() < limit,
            "waited {limit:?} for {what}: {:?}",
            records.values().map(status).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Photos not yet at an outcome.
fn unfinished(records: &BTreeMap<String, Value>) -> usize {
    records
        .values()
        .filter(|p| !OUTCOMES.contains(&status(p)))
        .count()
}

/// Waits until every uploaded photo is at an outcome.
fn all_at_outcome(api: &Served, ids: &[String], limit: Duration) -> BTreeMap<String, Value> {
    wait_until(api, limit, "every photo at an outcome", |r| {
        r.len() == ids.len() && unfinished(r) == 0
    })
}

/// The checks after the crash: every photo at an outcome, each stage once in
/// its history, one `photo.analyzed` event each, and an empty queue.
fn check_no_loss_no_duplicates(
    ids: &[String],
    records: &BTreeMap<String, Value>,
    store: MetaStore,
    queue: JobQueue,
    log: EventLog,
) {
    for id in ids {
        let photo = &records[id];
        assert!(OUTCOMES.contains(&status(photo)), "{photo}");
        let history: Vec<&str> = photo["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["status"].as_str().unwrap())
            .collect();
        let mut unique = history.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            history.len(),
            "a stage ran twice: {history:?}"
        );
        assert_eq!(&history[..2], ["stored", "analyzed"], "{history:?}");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        // Scaled out the relay publishes events a moment after they are written.
        let analyzed = loop {
            let events = log.read(0, 100_000).await.unwrap();
            let analyzed: Vec<String> = events
                .iter()
                .filter(|e| e.event.kind.name() == "photo.analyzed")
                .map(|e| e.event.photo_id.clone())
                .collect();
            if analyzed.len() >= ids.len() || started.elapsed() > Duration::from_secs(20) {
                break analyzed;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for id in ids {
            let n = analyzed.iter().filter(|a| *a == id).count();
            assert_eq!(n, 1, "photo {id} has {n} photo.analyzed events");
            // The embedding went in with the analysis, worker killed or not.
            let embedding = store.get_embedding(id, None).await.unwrap();
            assert!(
                embedding.is_some_and(|e| e.vector.dims() == 1280),
                "photo {id} was analysed without its embedding"
            );
        }
        // A job whose ack was lost (NATS restarting at that moment) comes
        // back after its lease, runs again finding the photo at its outcome,
        // and is acked: the queue empties, give it a few leases.
        let started = Instant::now();
        loop {
            let depth = queue.depth().await.unwrap();
            if depth == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{depth} jobs left in the queue"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(store.pending().await.unwrap(), 0, "photos left in flight");
    });
}

#[test]
fn embedded_a_worker_killed_mid_job_loses_nothing_and_duplicates_nothing() {
    let home = home();
    let dir = scratch("pipeline-crash-embedded");
    let blobs = format!("storage.path=\"{}\"", dir.join("blobs").display());
    let db_path = dir.join("darkroom.db");
    let db = format!("metadata.path=\"{}\"", db_path.display());
    // A short lease: the dead worker's jobs come back after 3 s.
    let shared = ["--set", &blobs, "--set", &db, "--set", "pipeline.lease_s=3"];
    let api = Served::start(&home, &[&["--role", "api"][..], &shared].concat());
    let photos = photos(&home);
    let ids = upload_all(&api, &photos);

    let mut worker = Served::start(&home, &[&["--role", "worker"][..], &shared].concat());
    let at_kill = wait_until(
        &api,
        Duration::from_secs(120),
        "the worker to be mid-way",
        |r| r.values().any(|p| status(p) != "stored"),
    );
    worker.kill_9();
    assert!(
        unfinished(&at_kill) > 0,
        "the worker finished everything before it was killed"
    );

    let _second = Served::start(&home, &[&["--role", "worker"][..], &shared].concat());
    let done = all_at_outcome(&api, &ids, Duration::from_secs(240));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (store, queue) = runtime.block_on(async {
        let store = MetaStore::open(&MetadataConfig::Sqlite {
            path: db_path.clone(),
        })
        .await
        .unwrap();
        let queue = JobQueue::open(&QueueConfig::Sqlite {}, &store, settings())
            .await
            .unwrap();
        (store, queue)
    });
    let log = EventLog::Store(store.clone());
    check_no_loss_no_duplicates(&ids, &done, store, queue, log);
    let _ = std::fs::remove_dir_all(&dir);
}

fn settings() -> QueueSettings {
    QueueSettings {
        lease: Duration::from_secs(3),
        max_deliver: 9,
    }
}

/// A nats-server of this test's own (so it can be killed), with JetStream
/// storing under `dir`.
fn start_nats(port: u16, dir: &std::path::Path) -> Child {
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH (scripts/services.sh installs it)");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn scale_out_a_worker_killed_and_nats_restarted_lose_nothing() {
    let home = home();
    let dir = scratch("pipeline-crash-scale-out");
    let port = free_port();
    let mut nats = start_nats(port, &dir.join("nats"));
    let nats_url = format!("nats://127.0.0.1:{port}");
    let pg_url = std::env::var("PIPELINE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let unique = format!(
        "t_crash_{}_{}",
        std::process::id(),
        pipeline::photo::now_ms()
    );
    let settings_args = [
        format!("storage.path=\"{}\"", dir.join("blobs").display()),
        "metadata.kind=\"postgres\"".into(),
        format!("metadata.url=\"{pg_url}\""),
        format!("metadata.schema=\"{unique}\""),
        "queue.kind=\"nats\"".into(),
        format!("queue.url=\"{nats_url}\""),
        format!("queue.prefix=\"{unique}\""),
        "pipeline.lease_s=3".into(),
    ];
    let shared: Vec<&str> = settings_args
        .iter()
        .flat_map(|s| ["--set", s.as_str()])
        .collect();
    let api = Served::start(&home, &[&["--role", "api"][..], &shared].concat());
    let photos = photos(&home);
    let ids = upload_all(&api, &photos);

    // 1 api + 2 workers; one is killed mid-job, then NATS dies and comes back
    // under the survivor, then a replacement worker joins.
    let mut doomed = Served::start(&home, &[&["--role", "worker"][..], &shared].concat());
    let _survivor = Served::start(&home, &[&["--role", "worker"][..], &shared].concat());
    let at_kill = wait_until(
        &api,
        Duration::from_secs(120),
        "the workers to be mid-way",
        |r| r.values().any(|p| status(p) != "stored"),
    );
    doomed.kill_9();
    assert!(
        unfinished(&at_kill) > 0,
        "the workers finished everything before the kill"
    );
    let _ = nats.kill();
    let _ = nats.wait();
    std::thread::sleep(Duration::from_secs(1));
    nats = start_nats(port, &dir.join("nats"));
    let _replacement = Served::start(&home, &[&["--role", "worker"][..], &shared].concat());

    let done = all_at_outcome(&api, &ids, Duration::from_secs(240));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (store, queue) = runtime.block_on(async {
        let store = MetaStore::open(&MetadataConfig::Postgres {
            url: pg_url.clone(),
            schema: unique.clone(),
            connections: 1,
        })
        .await
        .unwrap();
        let queue = JobQueue::open(
            &QueueConfig::Nats {
                url: nats_url.clone(),
                prefix: unique.clone(),
            },
            &store,
            settings(),
        )
        .await
        .unwrap();
        (store, queue)
    });
    let log = match &queue {
        JobQueue::Nats(q) => EventLog::Nats(q.events()),
        JobQueue::Sqlite(_) => unreachable!(),
    };
    check_no_loss_no_duplicates(&ids, &done, store, queue, log);
    runtime
        .block_on(pipeline::config::remove_deployment(
            &MetadataConfig::Postgres {
                url: pg_url,
                schema: unique,
                connections: 1,
            },
            &QueueConfig::Sqlite {},
        ))
        .expect("the test's schema is dropped");
    let _ = nats.kill();
    let _ = nats.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_worker_drains_on_sigterm_and_hands_back_what_it_did_not_finish() {
    let home = home();
    let dir = scratch("pipeline-drain");
    let blobs = format!("storage.path=\"{}\"", dir.join("blobs").display());
    let db = format!("metadata.path=\"{}\"", dir.join("darkroom.db").display());
    // A long lease: a job the draining worker kept would wait 10 minutes, far
    // past this test's limit, so finishing in time shows it was handed back.
    // A drain of 0 s hands back at once whatever is running.
    let shared = [
        "--set",
        &blobs,
        "--set",
        &db,
        "--set",
        "pipeline.lease_s=600",
        "--set",
        "pipeline.drain_s=0",
    ];
    let api = Served::start(&home, &[&["--role", "api"][..], &shared].concat());
    let photos = photos(&home);
    let ids = upload_all(&api, &photos);
    let mut worker = Served::start(&home, &[&["--role", "worker"][..], &shared].concat());
    wait_until(&api, Duration::from_secs(120), "the worker to start", |r| {
        r.values().any(|p| status(p) != "stored")
    });
    let killed = Command::new("kill")
        .args(["-TERM", &worker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = worker.child.wait().unwrap();
    assert!(exit.success(), "the worker exits 0 after draining: {exit}");
    let at_stop = records(&api);
    assert!(
        unfinished(&at_stop) > 0,
        "the worker finished everything before SIGTERM"
    );

    let _second = Served::start(&home, &[&["--role", "worker"][..], &shared].concat());
    let done = all_at_outcome(&api, &ids, Duration::from_secs(120));
    assert_eq!(done.len(), ids.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The synthetic analyzer (benchmarks of the control plane only) takes the
/// explicit flag with `--role worker` and nothing else turns it on; a
/// worker running it says so in its log, `/readyz` and `/metrics`, and the
/// photos still go through the real pipeline to an outcome.
#[test]
fn the_synthetic_analyzer_needs_its_flag_and_says_so() {
    let home = home();
    let dir = scratch("pipeline-synthetic");
    // Refused without --role worker, and as a setting in any layer.
    let out = darkroom(&home, &["serve", "--analyzer", "synthetic"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("--role worker"),
        "{text}"
    );
    let out = darkroom(&home, &["serve", "--set", "synthetic_analyzer=true"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("synthetic_analyzer"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .env("DARKROOM_SYNTHETIC_ANALYZER", "true")
        .arg("--home")
        .arg(&home.root)
        .arg("serve")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("synthetic_analyzer"),
        "{text}"
    );
    let file = dir.join("darkroom.toml");
    std::fs::write(&file, "synthetic_analyzer = true\n").unwrap();
    let out = darkroom(&home, &["serve", "--config", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("synthetic_analyzer"),
        "{text}"
    );

    let blobs = format!("storage.path=\"{}\"", dir.join("blobs").display());
    let db = format!("metadata.path=\"{}\"", dir.join("darkroom.db").display());
    let shared = ["--set", &blobs, "--set", &db];
    let api = Served::start(&home, &[&["--role", "api"][..], &shared].concat());
    let mut worker = Served::start(
        &home,
        &[
            &["--role", "worker", "--analyzer", "synthetic"][..],
            &shared,
        ]
        .concat(),
    );
    assert!(
        worker.stderr_text().contains("SYNTHETIC ANALYZER"),
        "{}",
        worker.stderr_text()
    );
    let (code, ready) = http(&worker.address, &get("/readyz"));
    assert_eq!(code, 200);
    assert!(ready.contains("SYNTHETIC ANALYZER"), "{ready}");
    let (_, metrics) = http(&worker.address, &get("/metrics"));
    assert!(
        metrics.contains("darkroom_synthetic_analyzer 1"),
        "{metrics}"
    );
    let (_, ready) = http(&api.address, &get("/readyz"));
    assert_eq!(ready, "ready\n");
    let (_, metrics) = http(&api.address, &get("/metrics"));
    assert!(
        !metrics.contains("darkroom_synthetic_analyzer"),
        "{metrics}"
    );

    let photos = photos(&home);
    let ids = upload_all(&api, &photos);
    let done = all_at_outcome(&api, &ids, Duration::from_secs(60));
    for id in &ids {
        let (_, body) = http(&api.address, &get(&format!("/v1/photos/{id}")));
        let photo: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            photo["analysis"]["concepts"].as_array().map(Vec::len),
            Some(10),
            "{photo}"
        );
        assert_ne!(status(&done[id]), "failed", "{}", done[id]);
    }
}
