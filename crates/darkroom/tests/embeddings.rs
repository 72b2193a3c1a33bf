//! `darkroom embeddings backfill` as an operator runs it: photos analysed
//! before embeddings were kept get theirs, equal to what `darkroom analyze
//! --embedding` computes for the same file; a run stopped part-way resumes;
//! a second run has nothing to do. On SQLite and on PostgreSQL.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use pipeline::photo::{NewPhoto, Original, Submission};
use pipeline::{original_key, MetaStore, MetadataConfig, Status, Transition};
use sha2::{Digest, Sha256};

/// Photos of every kind the set-up fetches: camera JPEGs, PNGs, a JPEG.
fn photos(home: &models::Home) -> Vec<PathBuf> {
    let camera = home.camera_photos();
    let samples = home.samples();
    vec![
        camera.join("Storm.jpg"),
        camera.join("LadyBird.jpg"),
        samples.join("coffee.png"),
        samples.join("astronaut.png"),
        samples.join("rocket.jpg"),
    ]
}

/// Each photo as a deployment that predates embeddings holds it: the
/// original in the blob store, the record analysed, no embedding.
async fn analysed_without_embeddings(
    store: &MetaStore,
    blobs: &storage::BlobStore,
    photos: &[PathBuf],
) -> HashMap<String, PathBuf> {
    let mut ids = HashMap::new();
    for path in photos {
        let bytes = std::fs::read(path).unwrap();
        let id = hex::encode(Sha256::digest(&bytes));
        blobs
            .put_if_absent(&original_key(&id), bytes.clone().into())
            .await
            .unwrap();
        let photo = NewPhoto {
            id: id.clone(),
            submission: Submission::default(),
            original: Original {
                bytes: bytes.len() as u64,
                ..Original::default()
            },
            by: "api".into(),
            at_ms: 1,
        };
        store.insert_photo(&photo, &[]).await.unwrap();
        let mut t = Transition::new(&id, Status::Stored, Status::Analyzed, "worker:old", 2);
        t.analysis = Some(domain::PhotoAnalysis::empty(id.clone(), [0, 0]));
        store.transition(&t).await.unwrap().expect("analysed");
        ids.insert(id, path.clone());
    }
    ids
}

/// `darkroom analyze --embedding --decode DECODE` of each file: base64 by path.
fn analyzed_embeddings(
    home: &models::Home,
    photos: &[PathBuf],
    decode: &str,
) -> HashMap<PathBuf, String> {
    let mut args = vec!["analyze".to_string(), "--embedding".to_string()];
    if decode != "model" {
        args.extend(["--decode".to_string(), decode.to_string()]);
    }
    args.extend(photos.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = darkroom(home, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                PathBuf::from(v["photoId"].as_str().unwrap()),
                v["embedding"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn backfill(home: &models::Home, settings: &[String], extra: &[&str]) -> String {
    let mut args: Vec<&str> = vec!["embeddings", "backfill"];
    for s in settings {
        args.extend(["--set", s.as_str()]);
    }
    args.extend(extra);
    darkroom_ok(home, &args).1
}

/// Backfills with `engine.decode = DECODE` and checks every embedding
/// against `darkroom analyze` (all models) in that mode: the backfill runs
/// the classifier alone, and in `fast` mode the shrink-on-load must not
/// depend on which models run.
fn check_backfill(metadata: MetadataConfig, settings: Vec<String>, blobs_dir: &Path, decode: &str) {
    let home = home();
    let photos = photos(&home);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(MetaStore::open(&metadata)).unwrap();
    let blobs = storage::BlobStore::open(&storage::StorageConfig::Local {
        path: blobs_dir.to_path_buf(),
    })
    .unwrap();
    let ids = runtime.block_on(analysed_without_embeddings(&store, &blobs, &photos));
    let settings: Vec<String> = settings
        .into_iter()
        .chain([
            format!("storage.path=\"{}\"", blobs_dir.display()),
            format!("engine.decode=\"{decode}\""),
        ])
        .collect();
    let missing = |store: &MetaStore| {
        runtime
            .block_on(store.missing_embeddings("efficientnet-lite0", "", i64::MIN, 100))
            .unwrap()
            .len()
    };
    assert_eq!(missing(&store), photos.len(), "every photo lacks one");

    // Stopped after two: the rest wait for the next run.
    let first = backfill(&home, &settings, &["--limit", "2"]);
    assert!(first.contains("2 embeddings stored"), "{first}");
    assert!(first.contains("3 still missing"), "{first}");
    let second = backfill(&home, &settings, &[]);
    assert!(second.contains("3 embeddings stored, 0 failed"), "{second}");
    let third = backfill(&home, &settings, &[]);
    assert!(third.contains("nothing to do"), "{third}");

    let expected = analyzed_embeddings(&home, &photos, decode);
    for (id, path) in &ids {
        let stored = runtime
            .block_on(store.get_embedding(id, Some("efficientnet-lite0")))
            .unwrap()
            .unwrap_or_else(|| panic!("{} has no embedding", path.display()));
        assert_eq!(stored.vector.dims(), 1280);
        assert_eq!(stored.version.len(), 12, "{}", stored.version);
        assert_eq!(
            &stored.vector.to_base64(),
            &expected[path],
            "{}: the backfilled embedding is not what analyze computes",
            path.display()
        );
    }
    // One photo.embedded event each, however many runs.
    let events = runtime.block_on(store.read_events(0, 1000)).unwrap();
    let embedded = events
        .iter()
        .filter(|e| e.event.kind.name() == "photo.embedded")
        .count();
    assert_eq!(embedded, photos.len());

    // The search catalogue, built from what was stored: every photo in its
    // similar-photo index, each finding itself first.
    let file = blobs_dir.with_extension("snapshot");
    let mut args: Vec<&str> = vec!["index", "rebuild"];
    for s in &settings {
        args.extend(["--set", s.as_str()]);
    }
    let out_arg = file.display().to_string();
    args.extend(["--out", out_arg.as_str()]);
    let (stdout, _) = darkroom_ok(&home, &args);
    assert!(
        stdout.contains(&format!("indexed {} photos", photos.len())),
        "{stdout}"
    );
    let (catalogue, _) = search::snapshot::load(&file).unwrap().unwrap();
    assert_eq!(catalogue.len(), photos.len());
    let index = catalogue.vectors().unwrap();
    assert_eq!(index.len(), photos.len());
    for id in ids.keys() {
        let stored = runtime
            .block_on(store.get_embedding(id, Some("efficientnet-lite0")))
            .unwrap()
            .unwrap();
        let top = index.search(&stored.vector.0, 1, 16, &|_| true).unwrap();
        assert_eq!(top[0].0, id.as_str());
    }
}

#[test]
fn backfill_on_sqlite_in_fast_mode_computes_the_missing_embeddings_resumably() {
    let dir = scratch("embeddings-sqlite");
    let db = dir.join("darkroom.db");
    check_backfill(
        MetadataConfig::Sqlite { path: db.clone() },
        vec![format!("metadata.path=\"{}\"", db.display())],
        &dir.join("blobs"),
        "fast",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn backfill_on_postgres_computes_the_missing_embeddings_resumably() {
    let dir = scratch("embeddings-postgres");
    let url = std::env::var("PIPELINE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let nats =
        std::env::var("PIPELINE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let schema = format!("t_backfill_{}", std::process::id());
    let metadata = MetadataConfig::Postgres {
        url: url.clone(),
        schema: schema.clone(),
        connections: 2,
    };
    check_backfill(
        metadata.clone(),
        vec![
            "metadata.kind=\"postgres\"".into(),
            format!("metadata.url=\"{url}\""),
            format!("metadata.schema=\"{schema}\""),
            "queue.kind=\"nats\"".into(),
            format!("queue.url=\"{nats}\""),
        ],
        &dir.join("blobs"),
        "model",
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(pipeline::store::postgres::drop_schema(&url, &schema))
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
