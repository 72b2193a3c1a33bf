//! The decoder conformance test (issue 17): every JPEG, MPO, PNG and WebP
//! file of Pillow's own test images (`darkroom models fetch --test-corpus`)
//! through decode, thumbnail and `darkroom analyze`, against Pillow's verdict
//! on the same files (`scripts/corpus_reference.py`, which scripts/test.sh
//! runs first).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use imaging::{DecodeRequest, Limits, ThumbnailSpec};

/// Files Pillow decodes and Darkroom refuses, each with the reason. The test
/// fails on any other such file, and on an entry here that no longer is one.
const ONLY_PILLOW_DECODES: &[(&str, &str)] = &[];

/// JPEGs on which libjpeg-turbo only warns (Pillow decodes them), and the
/// warning each must carry in `decodeWarnings`.
const WARNED: [(&str, &str); 6] = [
    ("icc-after-SOF.jpg", "jpeg_bad_icc_profile"),
    ("jpeg_ff00_header.jpg", "jpeg_stray_bytes"),
    ("junk_jpeg_header.jpg", "jpeg_stray_bytes"),
    ("photoshop-200dpi-broken.jpg", "jpeg_stray_bytes"),
    ("truncated_app14.jpg", "jpeg_stray_bytes"),
    ("hopper_bad_exif.jpg", "jpeg_corrupt_data"),
];

/// Every code a refused photo may carry (imaging's stable codes).
const CODES: [&str; 7] = [
    "image_too_large",
    "too_many_pixels",
    "unsupported_format",
    "unsupported_image_feature",
    "truncated_image",
    "corrupt_image",
    "empty_image",
];

/// The corpus's decompression bombs in these formats: a PNG whose text
/// chunk inflates to gigabytes (Pillow refuses it; the PNG decoder here
/// leaves text chunks compressed).
const DECOMPRESSION_BOMBS: [&str; 1] = ["png_decompression_dos.png"];

/// The pixel limit `darkroom analyze` runs with here: the peak-memory check
/// is sized from it.
const MAX_PIXELS: u64 = 20_000_000;

fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run `darkroom models fetch --test-corpus` (scripts/test.sh does)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| imaging::has_photo_extension(p))
        .collect();
    files.sort();
    files
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Pillow's verdict per file name: decoded or not.
fn pillow_verdicts(home: &models::Home) -> BTreeMap<String, bool> {
    let path = home.root.join("corpus/pillow.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run `var/venv/bin/python scripts/corpus_reference.py` (scripts/test.sh does)",
            path.display()
        )
    });
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["files"]
        .as_object()
        .expect("files")
        .iter()
        .map(|(name, v)| (name.clone(), v["decoded"].as_bool().expect("decoded")))
        .collect()
}

/// `Ok(())` or the refusal's code.
type Verdict = Result<(), String>;

#[test]
fn every_corpus_file_is_decoded_or_refused_by_code_and_no_fewer_than_pillow_decodes() {
    let home = common::home();
    let dir = home.test_corpus();
    let files = corpus_files(&dir);
    let pillow = pillow_verdicts(&home);
    assert!(
        files.len() >= 500,
        "{} files in {}",
        files.len(),
        dir.display()
    );
    assert_eq!(
        files.iter().map(|p| name(p)).collect::<BTreeSet<_>>(),
        pillow.keys().cloned().collect::<BTreeSet<_>>(),
        "Pillow's verdicts are for another corpus: rerun scripts/corpus_reference.py"
    );

    // Decode and thumbnail, in this process, each file alone.
    let limits = Limits {
        max_pixels: MAX_PIXELS,
        ..Limits::default()
    };
    let spec: ThumbnailSpec = serde_json::from_str(r#"{"width": 128, "height": 128}"#).unwrap();
    let mut decoded: BTreeMap<String, Verdict> = BTreeMap::new();
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let n = name(path);
        let verdict = imaging::decode(
            &bytes,
            &DecodeRequest {
                limits,
                min_size: None,
            },
        )
        .map(|d| assert!(d.image.is_consistent(), "{n}: inconsistent pixels"))
        .map_err(|e| e.code().to_string());
        let thumbnail = imaging::render(&bytes, &limits, &spec)
            .map(|t| assert!(!t.bytes.is_empty(), "{n}: an empty thumbnail"))
            .map_err(|e| e.code().to_string());
        assert_eq!(
            thumbnail, verdict,
            "{n}: the thumbnail path disagrees with decode"
        );
        decoded.insert(n, verdict);
    }

    // `darkroom analyze` over the whole folder: the engine, the models, and
    // the memory it took.
    let out = common::darkroom(
        &home,
        &[
            "analyze",
            "--max-pixels",
            &MAX_PIXELS.to_string(),
            dir.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut analysed: BTreeMap<String, Verdict> = BTreeMap::new();
    let mut warned: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let a: serde_json::Value = serde_json::from_str(line).unwrap();
        let n = name(Path::new(a["photoId"].as_str().unwrap()));
        if let Some(warnings) = a["decodeWarnings"].as_array() {
            let codes = warnings
                .iter()
                .map(|w| w["code"].as_str().unwrap().to_string());
            warned.insert(n.clone(), codes.collect());
        }
        analysed.insert(n, Ok(()));
    }
    for line in stderr.lines().filter(|l| l.starts_with("error: ")) {
        // error: PATH: reason (code)
        let (path, rest) = line["error: ".len()..].split_once(": ").unwrap();
        let code = rest.rsplit_once(" (").unwrap().1.trim_end_matches(')');
        analysed.insert(name(Path::new(path)), Err(code.to_string()));
    }
    assert_eq!(analysed, decoded, "darkroom analyze disagrees with decode");

    // The JPEGs libjpeg only warns about are analysed, and say so.
    for (file, code) in WARNED {
        assert_eq!(analysed[file], Ok(()), "{file}");
        assert!(
            warned
                .get(file)
                .is_some_and(|codes| codes.iter().any(|c| c == code)),
            "{file}: decodeWarnings {:?}, expected {code}",
            warned.get(file)
        );
    }
    println!("decodeWarnings on {} files: {warned:?}", warned.len());

    // Every refusal carries a stable code.
    for (n, v) in &decoded {
        if let Err(code) = v {
            assert!(CODES.contains(&code.as_str()), "{n}: refused with `{code}`");
        }
    }
    // At least as many as Pillow, and every file only Pillow decodes is
    // in the allow-list, which holds nothing else.
    let ours = decoded.values().filter(|v| v.is_ok()).count();
    let theirs = pillow.values().filter(|&&ok| ok).count();
    let only_pillow: BTreeSet<&str> = pillow
        .iter()
        .filter(|(n, &ok)| ok && decoded[*n].is_err())
        .map(|(n, _)| n.as_str())
        .collect();
    let allowed: BTreeSet<&str> = ONLY_PILLOW_DECODES.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        only_pillow, allowed,
        "files only Pillow decodes, against the allow-list"
    );
    assert!(ours >= theirs, "Darkroom decodes {ours}, Pillow {theirs}");
    println!(
        "{} files: Darkroom decodes {ours} and refuses {}; Pillow decodes {theirs}",
        files.len(),
        files.len() - ours
    );

    // Peak memory. Against a run over as many ordinary photos as fill the
    // same batches (the sample photos, ten times over), the corpus may add,
    // per decode in flight (one per core), the largest decode the pixel
    // limit allows, twice over for an axis-swapping EXIF rotation. A
    // decompression bomb that got past the limits would blow through it.
    let ordinary = common::scratch("corpus-baseline");
    for round in 0..10 {
        for entry in std::fs::read_dir(home.samples()).unwrap() {
            let path = entry.unwrap().path();
            let link = ordinary.join(format!("{round}-{}", name(&path)));
            std::os::unix::fs::symlink(&path, link).unwrap();
        }
    }
    let baseline = peak_mib(&common::darkroom(
        &home,
        &["analyze", ordinary.to_str().unwrap()],
    ));
    let peak = peak_mib(&out);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let bound = baseline + cores * MAX_PIXELS * 3 * 2 / (1 << 20);
    println!(
        "peak memory {peak} MiB over the corpus, {baseline} MiB over the samples ten times, bound {bound} MiB"
    );
    assert!(peak <= bound, "peak memory {peak} MiB > {bound} MiB");
    let _ = std::fs::remove_dir_all(&ordinary);

    // The decompression bombs alone: no more than a small photo takes.
    let rocket = home.samples().join("rocket.jpg");
    let small = peak_mib(&common::darkroom(
        &home,
        &[
            "analyze",
            rocket.to_str().unwrap(),
            rocket.to_str().unwrap(),
        ],
    ));
    for bomb in DECOMPRESSION_BOMBS {
        let path = dir.join(bomb);
        let peak = peak_mib(&common::darkroom(
            &home,
            &["analyze", path.to_str().unwrap(), rocket.to_str().unwrap()],
        ));
        println!("{bomb}: peak memory {peak} MiB, {small} MiB for a small photo");
        assert!(peak <= small + 64, "{bomb}: peak memory {peak} MiB");
    }
}

/// The peak memory `darkroom analyze` reports on its last line.
fn peak_mib(out: &std::process::Output) -> u64 {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .filter_map(|l| l.split("peak memory ").nth(1))
        .filter_map(|rest| rest.trim_end_matches(" MiB").parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no peak memory in darkroom analyze's stderr:\n{stderr}"))
}

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/PID/status: the memory check needs Linux's /proc");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .expect("a VmRSS line")
}

/// The `code` of an error body.
fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(body));
    });
    v["error"]["code"].as_str().unwrap_or("(none)").to_string()
}

/// Posts every named body to `path`, from eight threads at once; the
/// status and body of each answer, by name.
fn post_all(
    address: &str,
    path: &str,
    bodies: &[(String, Vec<u8>)],
) -> BTreeMap<String, (u16, Vec<u8>)> {
    post_all_as(address, path, "application/octet-stream", bodies)
}

/// [`post_all`] with another `Content-Type`.
fn post_all_as(
    address: &str,
    path: &str,
    content_type: &str,
    bodies: &[(String, Vec<u8>)],
) -> BTreeMap<String, (u16, Vec<u8>)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let answers = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((name, bytes)) = bodies.get(i) else {
                    break;
                };
                let request = common::post(path, content_type, bytes);
                // Overload is refused with 429 and Retry-After, as it should
                // be on a busy machine: a client waits and sends it again.
                let mut answer = common::http_bytes(address, &request);
                for _ in 0..120 {
                    if !matches!(answer.0, 429 | 503) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    answer = common::http_bytes(address, &request);
                }
                answers.lock().unwrap().insert(name.clone(), answer);
            });
        }
    });
    answers.into_inner().unwrap()
}

/// The same photo in other bytes: `comment` after its end (JPEG's EOI,
/// PNG's IEND, WebP's RIFF size), which every decoder and the whole-file
/// check leave alone.
fn with_comment(bytes: &[u8], comment: &str) -> Vec<u8> {
    [bytes, comment.as_bytes()].concat()
}

/// Waits until the workers have analysed every upload.
fn drain(address: &str) {
    let started = std::time::Instant::now();
    loop {
        let (_, metrics) = common::http(address, &common::get("/metrics"));
        let waiting = metrics
            .lines()
            .find(|l| l.starts_with("darkroom_pipeline_photos{status=\"stored\"}"))
            .and_then(|l| l.split_whitespace().nth(1))
            .map_or(0, |n| n.parse::<u64>().unwrap());
        if waiting == 0 {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "{waiting} uploads still waiting for a worker"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

#[test]
fn the_server_answers_every_corpus_file_concurrently_and_keeps_its_memory() {
    let home = common::home();
    let files = corpus_files(&home.test_corpus());
    let limits = Limits::default();
    let verdicts: BTreeMap<String, Verdict> = files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            let v = imaging::decode(
                &bytes,
                &DecodeRequest {
                    limits,
                    min_size: None,
                },
            )
            .map(|_| ())
            .map_err(|e| e.code().to_string());
            (name(p), v)
        })
        .collect();
    let dir = common::scratch("corpus-serve");
    let blobs = format!("storage.path=\"{}\"", dir.join("blobs").display());
    let db = format!("metadata.path=\"{}\"", dir.join("darkroom.db").display());
    // As the README says to deploy it: glibc's malloc arenas capped at the
    // core count. With its default (8 per core) the resident memory of a
    // server taking uploads climbs about 20 MB per thousand photos, through
    // fragmentation across arenas, and was still climbing after 3,000;
    // capped, it is flat after the first thousand.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = common::Served::start_with_env(
        &home,
        &["--set", &blobs, "--set", &db],
        &[("MALLOC_ARENA_MAX", &cores.to_string())],
    );
    let pid = server.child.id();

    let corpus: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| (name(p), std::fs::read(p).unwrap()))
        .collect();

    // Two passes warm the server up (the allocator's arenas, the models'
    // buffers at every batch size, the workers): the corpus analysed, and
    // the same photos uploaded and analysed by the workers, each with a
    // comment added (uploads of the same bytes would be duplicates). Then
    // the memory before.
    // Requests of 32 photos fill every model's largest batch, so the
    // models' buffers reach the size the busiest moment of the run could
    // need (ONNX Runtime keeps its arena at the largest batch it has seen).
    let bulk: Vec<(String, Vec<u8>)> = corpus
        .chunks(32)
        .enumerate()
        .map(|(i, chunk)| {
            use base64::Engine as _;
            let images: Vec<serde_json::Value> = chunk
                .iter()
                .map(|(n, b)| {
                    serde_json::json!({"id": n, "data": base64::engine::general_purpose::STANDARD.encode(b)})
                })
                .collect();
            let body = serde_json::to_vec(&serde_json::json!({ "images": images })).unwrap();
            (format!("bulk {i}"), body)
        })
        .collect();
    for copy in ["first copy", "second copy"] {
        let others: Vec<(String, Vec<u8>)> = corpus
            .iter()
            .map(|(n, bytes)| (n.clone(), with_comment(bytes, copy)))
            .collect();
        post_all_as(&server.address, "/v1/analyze", "application/json", &bulk);
        post_all(&server.address, "/v1/analyze", &corpus);
        post_all(&server.address, "/v1/photos", &others);
        drain(&server.address);
    }
    let before = rss_mib(pid);

    let analysed = post_all(&server.address, "/v1/analyze", &corpus);
    let uploaded = post_all(&server.address, "/v1/photos", &corpus);
    for (n, verdict) in &verdicts {
        let (status, body) = &analysed[n];
        match verdict {
            Ok(()) => assert_eq!(*status, 200, "{n}: {}", String::from_utf8_lossy(body)),
            Err(code) => {
                assert!(
                    (400..500).contains(status),
                    "{n}: analyze answered {status}"
                );
                assert_eq!(&error_code(body), code, "{n}: analyze's code");
            }
        }
        let (status, body) = &uploaded[n];
        match (verdict, *status) {
            // 200: the same bytes were uploaded already (the corpus has
            // duplicates).
            (_, 200 | 202) => {}
            (Ok(()), _) => panic!(
                "{n}: decodes, but its upload got {status}: {}",
                String::from_utf8_lossy(body)
            ),
            (Err(_), 400..=499) => {
                let code = error_code(body);
                assert!(
                    CODES.contains(&code.as_str()),
                    "{n}: upload refused with `{code}`"
                );
            }
            (Err(_), _) => panic!("{n}: upload answered {status}"),
        }
    }
    // The workers analyse the uploads; then the memory after.
    drain(&server.address);
    let (status, _) = common::http(&server.address, &common::get("/readyz"));
    assert_eq!(status, 200, "the server is still ready");
    let after = rss_mib(pid);
    let accepted = uploaded.values().filter(|(s, _)| *s < 300).count();
    println!(
        "{} files to /v1/analyze and /v1/photos ({accepted} uploads accepted): memory {before} MiB before, {after} MiB after",
        files.len()
    );
    assert!(
        after as f64 <= before as f64 * 1.10,
        "memory grew from {before} MiB to {after} MiB"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
