//! The behaviour every backend must show, as one async check run against a
//! store: the local backend's unit test (src/store.rs) and the S3 integration
//! test (tests/s3.rs) both call [`check_store`], so the two cannot drift.
//!
//! Included by path from both crates, so it names the API as `super::…`: the
//! crate root in the library, the test binary's imports in tests/s3.rs.

use super::{BlobStore, StorageError};
use bytes::Bytes;

/// Runs every check against `store`, which must be empty.
pub async fn check_store(store: &BlobStore) {
    absent_keys_read_as_nothing(store).await;
    put_then_get_round_trips(store).await;
    put_replaces(store).await;
    put_if_absent_creates_once(store).await;
    delete_is_idempotent(store).await;
    a_prefix_is_not_a_blob(store).await;
    concurrent_put_if_absent_stores_one_copy(store).await;
    invalid_keys_are_refused_by_every_operation(store).await;
    files_round_trip_in_parts(store).await;
}

/// A file of more than one part (`PART_BYTES`) goes up as a multipart
/// upload and comes back byte for byte; an absent key writes no file.
async fn files_round_trip_in_parts(store: &BlobStore) {
    let dir = std::env::temp_dir().join(format!(
        "darkroom-blob-files-{}-{}",
        std::process::id(),
        store.describe().len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("up.bin");
    let bytes: Vec<u8> = (0..super::PART_BYTES + (3 << 20) + 5)
        .map(|i| (i % 253) as u8)
        .collect();
    std::fs::write(&source, &bytes).unwrap();
    store.put_file("index/big.snapshot", &source).await.unwrap();
    let back = dir.join("sub/down.bin");
    assert!(store.get_file("index/big.snapshot", &back).await.unwrap());
    assert!(
        std::fs::read(&back).unwrap() == bytes,
        "the file came back changed"
    );
    let absent = dir.join("absent.bin");
    assert!(!store.get_file("index/absent", &absent).await.unwrap());
    assert!(!absent.exists());
    store.delete("index/big.snapshot").await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn absent_keys_read_as_nothing(store: &BlobStore) {
    assert_eq!(store.get("originals/00/absent").await.unwrap(), None);
    assert!(!store.exists("originals/00/absent").await.unwrap());
}

async fn put_then_get_round_trips(store: &BlobStore) {
    // Every byte value, and enough of them to pass any small-buffer path.
    let big: Bytes = (0..(1 << 20) + 7).map(|i| (i % 251) as u8).collect();
    let cases = [
        ("originals/ab/cdef0123", big),
        (
            "thumbnails/42/9f86d081884c7d65.jpg",
            Bytes::from_static(b"\xff\xd8jpeg"),
        ),
        ("empty/blob", Bytes::new()),
    ];
    for (key, bytes) in cases {
        store.put(key, bytes.clone()).await.unwrap();
        assert!(store.exists(key).await.unwrap(), "{key}");
        let got = store
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(got.len(), bytes.len(), "{key}");
        assert!(got == bytes, "{key}: bytes differ");
    }
}

async fn put_replaces(store: &BlobStore) {
    let key = "thumbnails/7/replace.jpg";
    store.put(key, Bytes::from_static(b"first")).await.unwrap();
    store.put(key, Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(store.get(key).await.unwrap().unwrap(), "second");
}

async fn put_if_absent_creates_once(store: &BlobStore) {
    let key = "originals/12/3456789abcdef";
    let bytes = Bytes::from_static(b"the photo");
    assert!(store.put_if_absent(key, bytes.clone()).await.unwrap());
    assert!(!store.put_if_absent(key, bytes.clone()).await.unwrap());
    // Different bytes under a taken key are not written: the key is a hash,
    // so what is there is already right.
    assert!(!store
        .put_if_absent(key, Bytes::from_static(b"other"))
        .await
        .unwrap());
    assert_eq!(store.get(key).await.unwrap().unwrap(), bytes);
}

async fn delete_is_idempotent(store: &BlobStore) {
    let key = "thumbnails/8/gone.jpg";
    store.put(key, Bytes::from_static(b"x")).await.unwrap();
    store.delete(key).await.unwrap();
    assert!(!store.exists(key).await.unwrap());
    assert_eq!(store.get(key).await.unwrap(), None);
    store.delete(key).await.unwrap();
    store.delete("thumbnails/8/never-was.jpg").await.unwrap();
    // A deleted key can be created again.
    assert!(store
        .put_if_absent(key, Bytes::from_static(b"y"))
        .await
        .unwrap());
}

async fn a_prefix_is_not_a_blob(store: &BlobStore) {
    store
        .put("thumbnails/9/a.jpg", Bytes::from_static(b"a"))
        .await
        .unwrap();
    assert!(!store.exists("thumbnails/9").await.unwrap());
    assert_eq!(store.get("thumbnails/9").await.unwrap(), None);
}

/// Of writers racing to store the same new key, exactly one creates it: a
/// hard link on a local disk, `If-None-Match: *` on S3 (moto honours it).
async fn concurrent_put_if_absent_stores_one_copy(store: &BlobStore) {
    let bytes = Bytes::from_static(b"same bytes from every writer");
    for round in 0..10 {
        let key = format!("originals/fe/race{round}");
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let (store, key, bytes) = (store.clone(), key.clone(), bytes.clone());
                tokio::spawn(async move { store.put_if_absent(&key, bytes).await })
            })
            .collect();
        let mut created = 0;
        for writer in writers {
            created += usize::from(writer.await.unwrap().unwrap());
        }
        assert_eq!(
            created, 1,
            "round {round}: {created} writers created the blob"
        );
        assert_eq!(store.get(&key).await.unwrap().unwrap(), bytes);
    }
}

async fn invalid_keys_are_refused_by_every_operation(store: &BlobStore) {
    for key in [
        "",
        "/originals/ab",
        "../escape",
        "originals/../x",
        "Upper/case",
        "a//b",
        "a/",
    ] {
        let bytes = Bytes::from_static(b"x");
        let results: [Result<(), StorageError>; 5] = [
            store.put(key, bytes.clone()).await,
            store.put_if_absent(key, bytes).await.map(drop),
            store.get(key).await.map(drop),
            store.exists(key).await.map(drop),
            store.delete(key).await,
        ];
        for (op, result) in results.into_iter().enumerate() {
            match result {
                Err(StorageError::InvalidKey { key: reported, .. }) => assert_eq!(reported, key),
                other => panic!("operation {op} on {key:?}: expected InvalidKey, got {other:?}"),
            }
        }
    }
}
