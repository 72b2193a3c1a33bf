//! The SQLite store's own tests (the behaviour both stores share is
//! checked by `tests/backends.rs`).

use super::*;
use crate::photo::{Original, Submission};

fn temp_db(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir()
        .join(format!(
            "darkroom-test-{name}-{}-{nanos}",
            std::process::id()
        ))
        .join("nested")
        .join("meta.db")
}

fn new_photo(id: &str) -> NewPhoto {
    NewPhoto {
        id: id.into(),
        submission: Submission::default(),
        original: Original::default(),
        by: "api".into(),
        at_ms: 1,
    }
}

#[tokio::test]
async fn open_creates_the_directory_and_uses_wal() {
    let path = temp_db("wal");
    let store = SqliteStore::open(&path).await.unwrap();
    let mode: String = store
        .read(|c| {
            c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .map_err(db_err)
        })
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    // A second open of the same file (another process, say) works and
    // sees the first one's rows.
    store.insert_photo(&new_photo("a"), &[]).await.unwrap();
    let again = SqliteStore::open(&path).await.unwrap();
    assert!(again.get("a").await.unwrap().is_some());
    drop((store, again));
    let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
}

#[tokio::test]
async fn a_lock_held_past_the_timeout_is_unavailable() {
    let path = temp_db("busy");
    let store = SqliteStore::open_with(&path, Duration::from_millis(50))
        .await
        .unwrap();
    // Another process in the middle of a long write transaction.
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = store.insert_photo(&new_photo("a"), &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    other.execute_batch("ROLLBACK").unwrap();
    let (_, created) = store.insert_photo(&new_photo("a"), &[]).await.unwrap();
    assert!(created);
    drop((store, other));
    let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
}

#[tokio::test]
async fn an_unreadable_row_is_corrupt() {
    let path = temp_db("corrupt");
    let store = SqliteStore::open(&path).await.unwrap();
    store.insert_photo(&new_photo("a"), &[]).await.unwrap();
    store
        .write(|c| {
            c.execute("UPDATE photos SET history = '{not json' WHERE id = 'a'", [])
                .map_err(db_err)
        })
        .await
        .unwrap();
    match store.get("a").await {
        Err(StoreError::Corrupt { id, .. }) => assert_eq!(id, "a"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    drop(store);
    let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
}
