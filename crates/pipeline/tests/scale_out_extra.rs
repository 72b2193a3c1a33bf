//! What only the scale-out backends do, beyond the conformance suite
//! (`tests/backends.rs`): JetStream deduplication, leases that run out,
//! delayed NAKs, the dead-letter stream, the outbox relay, a NATS server
//! restart, and PostgreSQL start-up races.
//!
//! Needs PostgreSQL and a JetStream-enabled NATS server: `PIPELINE_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! `PIPELINE_NATS_URL` (default `nats://127.0.0.1:4222`). The restart test
//! runs its own `nats-server` (from PATH). Without them the tests fail,
//! saying what is missing: a skipped test would pass unnoticed.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pipeline::event::{Event, EventKind};
use pipeline::photo::{NewPhoto, Original, Status, Submission, Transition};
use pipeline::queue::nats::{run_relay, NatsQueue};
use pipeline::{
    DeadJob, Delivery, Job, JobQueue, MetaStore, MetadataConfig, QueueConfig, QueueError,
    QueueSettings, StoreError,
};

fn postgres_url() -> String {
    std::env::var("PIPELINE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn nats_url() -> String {
    std::env::var("PIPELINE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Unique per test and per run: schemas and prefixes never collide with a
/// concurrent test or a leftover from an earlier run.
fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t_{tag}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn settings(lease: Duration) -> QueueSettings {
    QueueSettings {
        lease,
        max_deliver: 6,
    }
}

async fn open_queue_at(url: &str, prefix: &str, lease: Duration) -> NatsQueue {
    NatsQueue::open(url, prefix, settings(lease))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "these tests need a JetStream-enabled NATS server at {url} \
                 (nats-server -js; set PIPELINE_NATS_URL): {e}"
            )
        })
}

async fn open_queue(prefix: &str, lease: Duration) -> NatsQueue {
    open_queue_at(&nats_url(), prefix, lease).await
}

async fn open_store(schema: &str) -> MetaStore {
    let url = postgres_url();
    MetaStore::open(&MetadataConfig::Postgres {
        url: url.clone(),
        schema: schema.to_string(),
        connections: 4,
    })
    .await
    .unwrap_or_else(|e| {
        panic!("these tests need PostgreSQL at {url} (set PIPELINE_POSTGRES_URL): {e}")
    })
}

/// Removes a test's streams (best effort: a failed test leaves them to the
/// next server wipe, and unique prefixes keep them out of the way).
async fn drop_streams(url: &str, prefix: &str) {
    let _ = pipeline::queue::nats::delete_streams(url, prefix).await;
}

async fn drop_schema(schema: &str) {
    let _ = pipeline::store::postgres::drop_schema(&postgres_url(), schema).await;
}

/// The one delivery a pull must bring within `wait`.
async fn pull_one(q: &NatsQueue, wait: Duration) -> Delivery {
    q.pull(1, wait)
        .await
        .unwrap()
        .pop()
        .expect("a delivery within the wait")
}

fn job(n: usize) -> Job {
    Job::process(&format!("{n:064x}"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_is_deduplicated_by_job_id_and_pull_answers_early() {
    let prefix = unique("dedupe");
    let q = open_queue(&prefix, Duration::from_secs(30)).await;
    let a = job(1);
    q.push(&a).await.unwrap();
    q.push(&a).await.unwrap();
    assert_eq!(
        q.depth().await.unwrap(),
        1,
        "the same job id is queued once"
    );

    // One job waiting, ten asked for, five seconds allowed: the fetch
    // answers with what there is instead of waiting out the deadline.
    let started = Instant::now();
    let got = q.pull(10, Duration::from_secs(5)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "pull waited {:?} with a job available",
        started.elapsed()
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job, a);
    assert_eq!(got[0].attempt, 1);
    assert_eq!(q.depth().await.unwrap(), 1, "a leased job still counts");
    for d in got {
        q.ack(d).await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 0);

    // Nothing left: empty after the wait, not an error.
    let started = Instant::now();
    assert!(q
        .pull(10, Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));

    // A different job (a later step) is queued.
    let b = Job::process(&a.photo_id, 2);
    q.push(&b).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 1);
    drop_streams(&nats_url(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_delivery_is_redelivered_when_its_lease_runs_out() {
    let prefix = unique("lease");
    let q = open_queue(&prefix, Duration::from_secs(1)).await;
    let a = job(2);
    q.push(&a).await.unwrap();
    let first = q.pull(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    // The worker "dies": the delivery is never settled.
    drop(first);
    assert!(
        q.pull(1, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty(),
        "redelivered before the lease ran out"
    );
    let second = q.pull(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(second.len(), 1, "not redelivered after the lease");
    assert_eq!(second[0].job, a);
    assert_eq!(second[0].attempt, 2);
    for d in second {
        q.ack(d).await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 0);
    drop_streams(&nats_url(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_waits_its_delay_and_release_does_not() {
    let prefix = unique("nak");
    let q = open_queue(&prefix, Duration::from_secs(30)).await;
    let a = job(3);
    q.push(&a).await.unwrap();
    let d = pull_one(&q, Duration::from_secs(2)).await;
    let retried_at = Instant::now();
    q.retry(d, Duration::from_millis(1500)).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 1, "a job waiting to retry counts");
    assert!(
        q.pull(1, Duration::from_millis(500))
            .await
            .unwrap()
            .is_empty(),
        "redelivered before the retry delay"
    );
    let d = pull_one(&q, Duration::from_secs(5)).await;
    assert!(retried_at.elapsed() >= Duration::from_millis(1400));
    assert_eq!(d.job, a);
    assert_eq!(d.attempt, 2);

    let released_at = Instant::now();
    q.release(d).await.unwrap();
    let d = pull_one(&q, Duration::from_secs(5)).await;
    assert!(released_at.elapsed() < Duration::from_secs(2));
    assert_eq!(d.attempt, 3);
    q.ack(d).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
    drop_streams(&nats_url(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_publishes_to_the_dead_stream_and_leaves_the_queue() {
    let prefix = unique("dead");
    let q = open_queue(&prefix, Duration::from_secs(30)).await;
    let a = job(4);
    q.push(&a).await.unwrap();
    let d = pull_one(&q, Duration::from_secs(2)).await;
    let dead = DeadJob {
        job: a.clone(),
        attempts: d.attempt,
        error: "the model crashed".into(),
        at_ms: 1_700_000_000_000,
        seq: 0,
    };
    q.dead(d, &dead).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
    assert!(q
        .pull(1, Duration::from_millis(1500))
        .await
        .unwrap()
        .is_empty());

    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let name = format!("{}_DEAD", prefix.to_ascii_uppercase());
    let mut stream = js.get_stream(&name).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    let message = stream.get_raw_message(1).await.unwrap();
    assert_eq!(message.subject.as_str(), format!("{prefix}.dead.process"));
    let stored: DeadJob = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(stored, dead);
    // The work-queue stream is empty too: terminated means removed.
    let mut jobs = js
        .get_stream(format!("{}_JOBS", prefix.to_ascii_uppercase()))
        .await
        .unwrap();
    assert_eq!(jobs.info().await.unwrap().state.messages, 0);
    drop_streams(&nats_url(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_moves_the_outbox_to_the_stream_exactly_once() {
    let schema = unique("relay");
    let prefix = unique("relay");
    let store = open_store(&schema).await;
    let queue = JobQueue::open(
        &QueueConfig::Nats {
            url: nats_url(),
            prefix: prefix.clone(),
        },
        &store,
        settings(Duration::from_secs(30)),
    )
    .await
    .unwrap_or_else(|e| panic!("NATS at {} is needed: {e}", nats_url()));
    let JobQueue::Nats(q) = &queue else {
        panic!("a NATS config opened a {} queue", queue.kind());
    };
    let events = q.events();

    // 300 events: more than one relay round. Half written with photo
    // changes, half on their own.
    let mut ids = Vec::new();
    for i in 0..150 {
        let photo_id = format!("{i:064x}");
        let uploaded = Event::for_step(
            &photo_id,
            1,
            1_000 + i,
            EventKind::PhotoUploaded {
                submission: Submission::default(),
                original: Original::default(),
            },
        );
        ids.push(uploaded.id.clone());
        let (_, created) = store
            .insert_photo(
                &NewPhoto {
                    id: photo_id.clone(),
                    submission: Submission::default(),
                    original: Original::default(),
                    by: "api".into(),
                    at_ms: 1_000 + i,
                },
                &[uploaded],
            )
            .await
            .unwrap();
        assert!(created);
        let failed = Event::for_job(
            &format!("process:{photo_id}:1"),
            1,
            &photo_id,
            2_000 + i,
            EventKind::PhotoFailed { error: "x".into() },
        );
        ids.push(failed.id.clone());
        store.append_events(&[failed]).await.unwrap();
    }
    assert_eq!(store.read_events(0, 1000).await.unwrap().len(), 300);

    // Two relays at once, as two processes would run them.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let relays = [
        tokio::spawn(run_relay(store.clone(), events.clone(), stop.clone())),
        tokio::spawn(run_relay(store.clone(), events.clone(), stop.clone())),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.read_events(0, 1).await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the relay left rows in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A late event is picked up by the running relays too.
    let late = Event::for_step("late", 1, 9_999, EventKind::PhotoPublished {});
    ids.push(late.id.clone());
    store.append_events(&[late]).await.unwrap();
    while !store.read_events(0, 1).await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the late event stayed in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(true).unwrap();
    for relay in relays {
        tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .expect("the relay stops when told")
            .unwrap();
    }

    let logged = events.read(0, 10_000).await.unwrap();
    let got: Vec<&str> = logged.iter().map(|l| l.event.id.as_str()).collect();
    assert_eq!(got.len(), ids.len(), "each event is in the stream once");
    assert_eq!(
        got.iter().copied().collect::<HashSet<_>>(),
        ids.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    assert!(logged.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(logged[0].seq, 1);
    // The stream keeps the outbox order (one relay's round publishes in
    // order; the other's repeats are dropped).
    let first_upload = logged.iter().position(|l| l.event.id == ids[0]).unwrap();
    let its_failure = logged.iter().position(|l| l.event.id == ids[1]).unwrap();
    assert!(first_upload < its_failure);

    // Reading on from a position, in pages.
    let page = events.read(logged[99].seq, 50).await.unwrap();
    assert_eq!(page, logged[100..150].to_vec());
    let tail = events.read(logged[290].seq, 50).await.unwrap();
    assert_eq!(tail, logged[291..].to_vec());
    assert!(events
        .read(logged.last().unwrap().seq, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(events.read(0, 0).await.unwrap().is_empty());

    // The subjects carry the type.
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(format!("{}_EVENTS", prefix.to_ascii_uppercase()))
        .await
        .unwrap();
    let first = stream.get_raw_message(logged[0].seq).await.unwrap();
    assert_eq!(
        first.subject.as_str(),
        format!("{prefix}.events.{}", logged[0].event.kind.name())
    );

    // Publishing the same events again (a relay that died before deleting)
    // adds nothing.
    events.publish(&logged[..10]).await.unwrap();
    assert_eq!(events.read(0, 10_000).await.unwrap().len(), ids.len());

    drop_streams(&nats_url(), &prefix).await;
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_opening_one_prefix_at_once_agree_and_a_new_lease_applies() {
    let prefix = unique("opens");
    let opens = (0..4).map(|_| {
        let prefix = prefix.clone();
        tokio::spawn(async move { open_queue(&prefix, Duration::from_secs(30)).await })
    });
    let mut queues = Vec::new();
    for open in opens {
        queues.push(open.await.unwrap());
    }
    queues[0].push(&job(8)).await.unwrap();
    let got = queues[3].pull(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), 1, "one stream and consumer behind every handle");

    // A restart with another lease updates the consumer in place; the
    // delivery in flight keeps its place.
    let reopened = open_queue(&prefix, Duration::from_secs(7)).await;
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(format!("{}_JOBS", prefix.to_ascii_uppercase()))
        .await
        .unwrap();
    let info = stream.consumer_info("workers").await.unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(7));
    assert_eq!(info.config.max_deliver, 6);
    for d in got {
        reopened.ack(d).await.unwrap();
    }
    assert_eq!(reopened.depth().await.unwrap(), 0);
    drop_streams(&nats_url(), &prefix).await;
}

/// A `nats-server -js` of the test's own, killed on drop.
struct NatsServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl NatsServer {
    fn start(port: u16, dir: &PathBuf) -> NatsServer {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting nats-server (is it on PATH?): {e}"));
        let server = NatsServer {
            child,
            port,
            dir: dir.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.clone()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_keeps_working_across_a_nats_restart() {
    let dir = std::env::temp_dir().join(unique("nats-store"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let server = NatsServer::start(port, &dir);
    let url = server.url();
    let q = open_queue_at(&url, "restart", Duration::from_secs(2)).await;
    let a = job(5);
    q.push(&a).await.unwrap();

    let dir = server.stop();
    // Down: a clear, retryable error once the client has seen the socket
    // close (on a busy machine that can take a moment; until then a pull
    // finds nothing, and never a phantom job).
    let noticed = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match q.pull(1, Duration::from_millis(200)).await {
            Err(e) => break e,
            Ok(got) => assert!(got.is_empty(), "a delivery from a stopped server"),
        }
        assert!(
            Instant::now() < noticed,
            "the client never noticed the server stop"
        );
    };
    assert!(matches!(err, QueueError::Unavailable(_)), "{err}");

    let server = NatsServer::start(port, &dir);
    // The client reconnects by itself; the job was on disk.
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivery = loop {
        assert!(Instant::now() < deadline, "no job after the restart");
        match q.pull(1, Duration::from_millis(500)).await {
            Ok(mut got) if !got.is_empty() => break got.pop().unwrap(),
            Ok(_) => {}
            Err(QueueError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("pulling after the restart: {e}"),
        }
    };
    assert_eq!(delivery.job, a);
    q.ack(delivery).await.unwrap();

    // And new work flows.
    let b = job(6);
    q.push(&b).await.unwrap();
    let got = q.pull(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job, b);
    for d in got {
        q.ack(d).await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 0);

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_are_unavailable_errors_naming_them() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let err = NatsQueue::open(&url, "nobody", settings(Duration::from_secs(5)))
        .await
        .err()
        .expect("no NATS server listens there");
    assert!(matches!(err, QueueError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains(&url), "{err}");

    let url = format!("postgres://me:secret@127.0.0.1:{port}/x");
    let err = MetaStore::open(&MetadataConfig::Postgres {
        url,
        schema: "x".into(),
        connections: 1,
    })
    .await
    .err()
    .expect("no PostgreSQL listens there");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_at_once_share_one_schema() {
    let schema = unique("race");
    let url = postgres_url();
    let opens = (0..4).map(|_| {
        let config = MetadataConfig::Postgres {
            url: url.clone(),
            schema: schema.clone(),
            connections: 2,
        };
        tokio::spawn(async move { MetaStore::open(&config).await })
    });
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().unwrap_or_else(|e| {
            panic!("these tests need PostgreSQL at {url} (set PIPELINE_POSTGRES_URL): {e}")
        }));
    }

    // Two processes racing one photo's transition: one wins.
    let id = format!("{:064x}", 7);
    let photo = NewPhoto {
        id: id.clone(),
        submission: Submission::default(),
        original: Original::default(),
        by: "api".into(),
        at_ms: 1,
    };
    let (_, created) = stores[0].insert_photo(&photo, &[]).await.unwrap();
    assert!(created);
    let (again, created) = stores[1].insert_photo(&photo, &[]).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, id);
    let races = stores.iter().map(|s| {
        let (s, id) = (s.clone(), id.clone());
        tokio::spawn(async move {
            let mut t = Transition::new(&id, Status::Stored, Status::Analyzed, "worker", 2);
            t.events = vec![Event::for_step(&id, 2, 2, EventKind::PhotoPublished {})];
            s.transition(&t).await.unwrap()
        })
    });
    let mut winners = 0;
    for race in races {
        winners += usize::from(race.await.unwrap().is_some());
    }
    assert_eq!(winners, 1);
    let record = stores[2].get(&id).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Analyzed);
    assert_eq!(record.history.len(), 2);
    assert_eq!(stores[3].read_events(0, 10).await.unwrap().len(), 1);
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_keeps_the_outbox_while_nats_is_down() {
    let schema = unique("relay_down");
    let store = open_store(&schema).await;
    let dir = std::env::temp_dir().join(unique("nats-relay"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let server = NatsServer::start(port, &dir);
    let q = open_queue_at(&server.url(), "relay", Duration::from_secs(30)).await;
    let events = q.events();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(run_relay(store.clone(), events.clone(), stop));

    let dir = server.stop();
    let ids: Vec<String> = (0..5).map(|i| format!("down:{i}")).collect();
    for id in &ids {
        let event = Event::for_step(id, 1, 1, EventKind::PhotoPublished {});
        store.append_events(&[event]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        store.read_events(0, 100).await.unwrap().len(),
        5,
        "rows deleted without NATS having them"
    );

    let server = NatsServer::start(port, &dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.read_events(0, 1).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the relay did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .expect("the relay stops when told")
        .unwrap();
    let logged = events.read(0, 100).await.unwrap();
    let got: Vec<String> = logged.iter().map(|l| l.event.photo_id.clone()).collect();
    assert_eq!(got, ids, "each once, in order");

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    drop_schema(&schema).await;
}
