//! What personal aesthetic heads cost per 10,000 users: storing them, a
//! new process loading them all, the poll that keeps them current, the
//! memory they take, and scoring a photo with one. Beside the in-memory
//! score, the peer: reading the user's head from the metadata store for
//! every request, as a server without the in-memory heads would.
//!
//! The heads are synthetic (1280 random weights each), which is what the
//! store and the scorer see of real ones.
//!
//!   cargo run --release -p pipeline --example aesthetic_cost [-- USERS [postgres://...]]
//!
//! With a PostgreSQL URL it runs on PostgreSQL (a schema of its own,
//! dropped at the end); else on SQLite in a temporary folder.

use std::time::Instant;

use pipeline::aesthetics::PersonalHeads;
use pipeline::config::MetadataConfig;
use pipeline::feedback::PersonalHead;
use pipeline::MetaStore;

const DIMS: usize = 1280;

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

fn head(i: usize, seed: &mut u64) -> PersonalHead {
    let weights = (0..DIMS)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect();
    PersonalHead {
        user: format!("user-{i:05}"),
        model: "efficientnet-lite0".into(),
        weights,
        bias: -0.1,
        positives: 10,
        negatives: 10,
        through_ms: 1_000 + i as i64,
        trained_ms: 1_000 + i as i64,
        metrics: learn::Metrics {
            precision: 0.9,
            recall: 0.8,
            f1: 0.85,
            ap: 0.9,
            threshold: 0.5,
            meets_target: true,
            positives: 10,
            negatives: 10,
            background_negatives: 0,
            folds: 5,
            l2: 0.01,
        },
    }
}

fn per(d: std::time::Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let users: usize = args.first().map_or(10_000, |a| a.parse().expect("USERS"));
    let id = format!("bench_aesthetic_{}", std::process::id());
    let dir = std::env::temp_dir().join(&id);
    let metadata = match args.get(1) {
        Some(url) => MetadataConfig::Postgres {
            url: url.clone(),
            schema: id.clone(),
            connections: 4,
        },
        None => MetadataConfig::Sqlite {
            path: dir.join("darkroom.db"),
        },
    };
    let store = MetaStore::open(&metadata).await.expect("the store opens");
    println!(
        "personal aesthetic heads: {users} users, {DIMS} weights each, {} metadata",
        store.kind()
    );

    let mut seed = 7;
    let started = Instant::now();
    for i in 0..users {
        assert!(store.save_personal_head(&head(i, &mut seed)).await.unwrap());
    }
    let saved = started.elapsed();
    println!(
        "store: {:.0} heads/s written ({:.0} µs each, with its event)",
        users as f64 / saved.as_secs_f64(),
        per(saved, users)
    );

    let before = rss();
    let heads = PersonalHeads::default();
    let started = Instant::now();
    let loaded = heads.refresh(&store).await.unwrap();
    let cold = started.elapsed();
    assert_eq!(loaded, users);
    let grown = rss().saturating_sub(before);
    println!(
        "a new process loads them all in {:.2} s; memory {:.1} MiB ({:.2} KiB a user; the process grew {:.1} MiB)",
        cold.as_secs_f64(),
        heads.memory_bytes() as f64 / (1 << 20) as f64,
        heads.memory_bytes() as f64 / 1024.0 / users as f64,
        grown as f64 / (1 << 20) as f64
    );

    let runs = 20;
    let started = Instant::now();
    for _ in 0..runs {
        assert_eq!(heads.refresh(&store).await.unwrap(), 0);
    }
    let idle = started.elapsed() / runs;
    let mut retrained = head(users / 2, &mut seed);
    retrained.through_ms += 1_000_000;
    store.save_personal_head(&retrained).await.unwrap();
    let started = Instant::now();
    assert_eq!(heads.refresh(&store).await.unwrap(), 1);
    let one = started.elapsed();
    println!(
        "the poll (every pipeline.concept_poll_ms): {:.1} ms with nothing new, {:.1} ms with one head retrained",
        idle.as_secs_f64() * 1000.0,
        one.as_secs_f64() * 1000.0
    );

    // Scoring one photo for one user: in memory, against the peer.
    let photo: Vec<f32> = head(users + 1, &mut seed).weights;
    let n = 100_000;
    let started = Instant::now();
    let mut sum = 0.0f32;
    for i in 0..n {
        let h = heads.get(&format!("user-{:05}", i % users)).unwrap();
        sum += h.score(&photo);
    }
    let memory = started.elapsed();
    let m = 2_000;
    let started = Instant::now();
    for i in 0..m {
        let h = store
            .personal_head(&format!("user-{:05}", i % users))
            .await
            .unwrap()
            .unwrap();
        sum += h.score(&photo);
    }
    let peer = started.elapsed();
    std::hint::black_box(sum);
    println!(
        "scoring a photo for a user: {:.2} µs from memory; {:.0} µs reading the head from the store each time (the peer, {:.0}× slower)",
        per(memory, n),
        per(peer, m),
        per(peer, m) / per(memory, n)
    );
    let catalogue = 100_000;
    println!(
        "sort=aesthetic over {catalogue} matches: about {:.0} ms of dot products on one core",
        per(memory, n) * catalogue as f64 / 1000.0
    );

    match &metadata {
        MetadataConfig::Postgres { url, schema, .. } => {
            pipeline::store::postgres::drop_schema(url, schema)
                .await
                .unwrap()
        }
        MetadataConfig::Sqlite { .. } => {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
