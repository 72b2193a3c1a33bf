//! The search catalogue at scale, beside SQLite FTS5 on the same documents.
//!
//! ```sh
//! cargo run --release -p search --example scale -- --db var/data/darkroom.db --photos 1000000 [--vectors]
//! ```
//!
//! Reads the analysed photos of a Darkroom database (their real concepts,
//! captions, sizes and embeddings) and makes `--photos` documents from them:
//! copy `i` of a real photo gets its own id, an upload time 30 s after the
//! one before, one of 1,000 uploaders, `published` (19 in 20) or
//! `needs_review`, its concept scores moved by up to ±0.05, and (with
//! `--vectors`) its embedding plus Gaussian noise of 0.01 per dimension (as bench/ann.py),
//! renormalised. Then it prints: the time and memory to build the
//! catalogue, the snapshot's size and the time to write and to load it (what
//! a new replica pays before it follows the event stream), and p50/p99 of
//! queries on one core, each beside the same query answered by SQLite FTS5
//! (a `MATCH` on the same terms, the status filter, a page of 20 by score
//! and the total; no facets, which the catalogue also computes).
//!
//! For `bench/search_http.py`, which measures the same catalogue over HTTP:
//! `--graph FILE` puts a similar-photo graph built elsewhere behind the
//! documents (bench/ann.py's `hnsw-<N>.bin`: real stock-photo embeddings
//! and blends of them; node `i` becomes photo `i`), and `--for-server`
//! leaves the snapshot where `darkroom serve` on `--db` looks for it
//! (`<db dir>/index/search-efficientnet-lite0.snapshot`), stamped with that
//! database's event log and its head, so the server loads it and follows
//! the log from there.

use std::time::{Duration, Instant};

use domain::photo::Status;
use pipeline::{MetaStore, MetadataConfig};
use rusqlite::{params, Connection};
use search::{Catalogue, Doc, Lexicon, Query, VectorSearch};
use vector::{Params, PhotoIndex, SplitMix};

struct Args {
    db: std::path::PathBuf,
    photos: usize,
    vectors: bool,
    runs: usize,
    peer: bool,
    lexicon: std::path::PathBuf,
    graph: Option<std::path::PathBuf>,
    for_server: bool,
}

fn args() -> Args {
    let mut a = Args {
        db: "var/data/darkroom.db".into(),
        photos: 100_000,
        vectors: false,
        runs: 200,
        peer: true,
        lexicon: "var/models/efficientnet-lite0/lexicon.tsv".into(),
        graph: None,
        for_server: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--db" => a.db = it.next().expect("--db PATH").into(),
            "--photos" => a.photos = it.next().and_then(|n| n.parse().ok()).expect("--photos N"),
            "--lexicon" => a.lexicon = it.next().expect("--lexicon PATH").into(),
            "--vectors" => a.vectors = true,
            "--runs" => a.runs = it.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--no-peer" => a.peer = false,
            "--graph" => a.graph = Some(it.next().expect("--graph FILE").into()),
            "--for-server" => a.for_server = true,
            _ => panic!(
                "usage: scale [--db PATH] [--photos N] [--vectors | --graph FILE] [--runs N] [--no-peer] \
                 [--lexicon PATH] [--for-server]"
            ),
        }
    }
    a
}

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The vector crate's seeded generator, with a normal draw on top.
struct Rng(SplitMix);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn unit(&mut self) -> f32 {
        self.0.unit() as f32
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let u = self.unit().max(1e-7);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

fn percentiles(mut t: Vec<Duration>) -> (f64, f64) {
    t.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(t[t.len() / 2]),
        ms(t[(t.len() * 99 / 100).min(t.len() - 1)]),
    )
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, f64) {
    f();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        std::hint::black_box(f());
        times.push(started.elapsed());
    }
    percentiles(times)
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime
        .block_on(MetaStore::open(&MetadataConfig::Sqlite {
            path: args.db.clone(),
        }))
        .expect("the database opens");
    let mut base: Vec<(Doc, Option<Vec<f32>>)> = Vec::new();
    let mut after = None;
    loop {
        let page = runtime.block_on(store.list(None, after, 1000)).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for r in page.iter().filter(|r| r.analysis.is_some()) {
            let v = runtime
                .block_on(store.get_embedding(&r.id, Some("efficientnet-lite0")))
                .unwrap()
                .map(|e| e.vector.0);
            base.push((Doc::from_record(r), v));
        }
    }
    assert!(
        !base.is_empty(),
        "no analysed photos in {}",
        args.db.display()
    );
    println!(
        "{} real analysed photos from {}; {} documents made from them",
        base.len(),
        args.db.display(),
        args.photos
    );

    let mut rng = Rng(SplitMix(7));
    let started_rss = rss();
    let started = Instant::now();
    let mut catalogue = Catalogue::new(None);
    let mut vectors = args
        .vectors
        .then(|| PhotoIndex::new("efficientnet-lite0", 1280, Params::default()));
    let fts = Connection::open_in_memory().unwrap();
    fts.execute_batch(
        "CREATE TABLE docs (seq INTEGER PRIMARY KEY, status TEXT, created INTEGER, uploader TEXT);
         CREATE VIRTUAL TABLE terms USING fts5(body, content='', contentless_delete=1);",
    )
    .unwrap();
    let mut fts_time = Duration::ZERO;
    let mut vector_time = Duration::ZERO;
    let tx_every = 10_000;
    for i in 0..args.photos {
        let (real, vector) = &base[i % base.len()];
        let mut doc = real.clone();
        doc.id = format!("{:064x}", i as u64 * 0x9E37_79B9 + 1);
        doc.seq = i as i64 + 1;
        doc.created_ms = 1_700_000_000_000 + i as i64 * 30_000;
        doc.uploader = Some(format!("u{}", rng.next() % 1000));
        doc.status = if rng.next().is_multiple_of(20) {
            Status::NeedsReview
        } else {
            Status::Published
        };
        for t in &mut doc.terms {
            t.1 = (t.1 + (rng.unit() - 0.5) * 0.1).clamp(0.01, 1.0);
        }
        catalogue.upsert(&doc);
        let f = Instant::now();
        if i.is_multiple_of(tx_every) {
            if i > 0 {
                fts.execute_batch("COMMIT").unwrap();
            }
            fts.execute_batch("BEGIN").unwrap();
        }
        fts.execute(
            "INSERT INTO docs VALUES (?1, ?2, ?3, ?4)",
            params![doc.seq, doc.status.as_str(), doc.created_ms, doc.uploader],
        )
        .unwrap();
        let body: Vec<String> = doc
            .terms
            .iter()
            .map(|t| t.0.to_lowercase().replace([' ', '-', '\''], "_"))
            .collect();
        fts.execute(
            "INSERT INTO terms (rowid, body) VALUES (?1, ?2)",
            params![doc.seq, body.join(" ")],
        )
        .unwrap();
        fts_time += f.elapsed();
        if let (Some(index), Some(v)) = (vectors.as_mut(), vector) {
            let v: Vec<f32> = v.iter().map(|x| x + rng.normal() * 0.01).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let v: Vec<f32> = v.iter().map(|x| x / n).collect();
            let t = Instant::now();
            index.upsert(&doc.id, &v).unwrap();
            vector_time += t.elapsed();
        }
        if (i + 1).is_multiple_of(100_000) {
            eprintln!(
                "  {} documents, {:.0} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    fts.execute_batch("COMMIT").unwrap();
    let build = started.elapsed() - fts_time - vector_time;
    let vector_bytes = vectors.as_ref().map_or(0, |v| v.graph().memory_bytes());
    if vectors.is_some() {
        catalogue.set_vectors(vectors.take());
    }
    let fts_bytes: i64 = fts
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let grown = rss().saturating_sub(started_rss) as f64;
    let catalogue_bytes = (grown - fts_bytes as f64 - vector_bytes as f64).max(0.0);
    println!(
        "build: catalogue {:.1} s ({:.0} photos/s); FTS5 peer {:.1} s; HNSW {:.1} s",
        build.as_secs_f64(),
        args.photos as f64 / build.as_secs_f64(),
        fts_time.as_secs_f64(),
        vector_time.as_secs_f64()
    );
    println!(
        "memory: catalogue about {:.2} KiB/photo (the process grew {:.0} MiB; the FTS5 peer holds {:.0} MiB); vectors {:.2} KiB/photo",
        catalogue_bytes / 1024.0 / args.photos as f64,
        grown / (1 << 20) as f64,
        fts_bytes as f64 / (1 << 20) as f64,
        vector_bytes as f64 / 1024.0 / args.photos as f64
    );
    if let Some(file) = &args.graph {
        let t = Instant::now();
        let mut r = std::io::BufReader::new(std::fs::File::open(file).expect("the graph file"));
        let graph = vector::Hnsw::read(&mut r).expect("a graph Hnsw::write wrote");
        let ids = (0..graph.nodes())
            .map(|i| format!("{:064x}", i as u64 * 0x9E37_79B9 + 1))
            .collect();
        let index = PhotoIndex::from_graph("efficientnet-lite0", graph, ids)
            .expect("one node per photo: build the graph at --photos");
        assert_eq!(index.len(), args.photos, "the graph has another size");
        catalogue.set_vectors(Some(index));
        println!(
            "vectors: the graph in {} ({} nodes) read in {:.1} s",
            file.display(),
            args.photos,
            t.elapsed().as_secs_f64()
        );
    }
    let (path, log) = if args.for_server {
        let log = pipeline::EventLog::Store(store.clone());
        catalogue.last_seq = runtime.block_on(log.head()).unwrap();
        let database = MetadataConfig::Sqlite {
            path: args.db.clone(),
        }
        .identity();
        let dir = args.db.parent().unwrap_or(std::path::Path::new("."));
        (
            dir.join("index/search-efficientnet-lite0.snapshot"),
            search::index::log_identity(&log, &database),
        )
    } else {
        let name = format!("darkroom-scale-{}.snapshot", std::process::id());
        (std::env::temp_dir().join(name), "scale".to_string())
    };
    let t = Instant::now();
    let size = search::snapshot::save(&catalogue, &log, &path).unwrap();
    let wrote = t.elapsed();
    if args.for_server {
        // Not read back here: with vectors, a second copy in this process
        // would double its memory; the server's start reads it.
        println!(
            "snapshot: {:.0} MiB ({:.2} KiB/photo), written in {:.1} s, left for `darkroom serve` at {}",
            size as f64 / (1 << 20) as f64,
            size as f64 / 1024.0 / args.photos as f64,
            wrote.as_secs_f64(),
            path.display()
        );
    } else {
        let t = Instant::now();
        let (loaded, _) = search::snapshot::load(&path).unwrap().unwrap();
        let read = t.elapsed();
        assert_eq!(loaded.len(), catalogue.len());
        drop(loaded);
        let _ = std::fs::remove_file(&path);
        println!(
            "snapshot: {:.0} MiB ({:.2} KiB/photo), written in {:.1} s, loaded in {:.1} s (a new replica's start)",
            size as f64 / (1 << 20) as f64,
            size as f64 / 1024.0 / args.photos as f64,
            wrote.as_secs_f64(),
            read.as_secs_f64()
        );
    }

    let lexicon = Lexicon::load(&args.lexicon).unwrap_or_else(|_| Lexicon::empty());
    let query = |pairs: &[(&str, &str)]| {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Query::parse(&pairs).unwrap()
    };
    println!(
        "\nqueries on one core, {} runs each, ms p50 / p99 (total matches):",
        args.runs
    );
    println!("{:<44} {:>18} {:>18}", "query", "catalogue", "SQLite FTS5");
    let cases: [(&str, Vec<(&str, &str)>); 6] = [
        ("everything published, newest", vec![]),
        (
            "widescreen, large, one uploader",
            vec![
                ("orientation", "widescreen"),
                ("size", "large"),
                ("uploader", "u7"),
            ],
        ),
        ("q=flower", vec![("q", "flower")]),
        ("q=animal (WordNet: 90 terms)", vec![("q", "animal")]),
        (
            "q=animal, widescreen",
            vec![("q", "animal"), ("orientation", "widescreen")],
        ),
        (
            "concept=plant&concept=nature",
            vec![("concept", "plant"), ("concept", "nature")],
        ),
    ];
    for (name, pairs) in cases {
        let q = query(&pairs);
        let plan = (!q.text.is_empty()).then(|| {
            search::text::plan(&q.text, &catalogue, &lexicon, None)
                .unwrap()
                .0
        });
        let total = catalogue.search(&q, plan.as_ref(), None).unwrap().total;
        let (p50, p99) = time(args.runs, || {
            catalogue.search(&q, plan.as_ref(), None).unwrap()
        });
        // The peer: the same terms in one MATCH, the same status, a page
        // of 20 by bm25 and the total.
        let peer = match (&plan, q.concepts.is_empty()) {
            (Some(plan), _) => {
                let terms: Vec<String> = plan[0]
                    .iter()
                    .map(|(t, _)| {
                        format!(
                            "\"{}\"",
                            catalogue
                                .term_name(*t)
                                .to_lowercase()
                                .replace([' ', '-', '\''], "_")
                        )
                    })
                    .collect();
                Some(terms.join(" OR "))
            }
            (None, false) => Some(
                q.concepts
                    .iter()
                    .map(|c| format!("\"{}\"", c.replace([' ', '-'], "_")))
                    .collect::<Vec<_>>()
                    .join(" AND "),
            ),
            (None, true) => None,
        };
        let peer = peer.filter(|_| args.peer);
        let peer_cell = match peer {
            Some(m) => {
                let mut page = fts
                    .prepare(
                        "SELECT t.rowid FROM terms t JOIN docs d ON d.seq = t.rowid \
                         WHERE terms MATCH ?1 AND d.status = 'published' ORDER BY bm25(terms) LIMIT 20",
                    )
                    .unwrap();
                let mut count = fts
                    .prepare(
                        "SELECT count(*) FROM terms t JOIN docs d ON d.seq = t.rowid \
                         WHERE terms MATCH ?1 AND d.status = 'published'",
                    )
                    .unwrap();
                let peer_total: i64 = count.query_row(params![m], |r| r.get(0)).unwrap();
                let (a, b) = time(args.runs, || {
                    let rows: Vec<i64> = page
                        .query_map(params![m], |r| r.get(0))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    let n: i64 = count.query_row(params![m], |r| r.get(0)).unwrap();
                    (rows, n)
                });
                format!("{a:>6.2} / {b:>6.2} ({peer_total})")
            }
            None if !args.peer => "-".to_string(),
            None => {
                let mut page = fts
                    .prepare("SELECT seq FROM docs WHERE status = 'published' ORDER BY created DESC LIMIT 20")
                    .unwrap();
                let mut count = fts
                    .prepare("SELECT count(*) FROM docs WHERE status = 'published'")
                    .unwrap();
                let (a, b) = time(args.runs, || {
                    let rows: Vec<i64> = page
                        .query_map([], |r| r.get(0))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    let n: i64 = count.query_row([], |r| r.get(0)).unwrap();
                    (rows, n)
                });
                format!("{a:>6.2} / {b:>6.2} (no filters)")
            }
        };
        println!("{name:<44} {p50:>6.2} / {p99:>6.2} ({total}) {peer_cell}");
    }
    if let Some(index) = catalogue.vectors() {
        let probe: Vec<f32> = index
            .vector(&format!("{:064x}", 12345u64 * 0x9E37_79B9 + 1))
            .unwrap()
            .to_vec();
        for (name, pairs) in [
            ("similar, unfiltered", vec![]),
            ("similar, widescreen", vec![("orientation", "widescreen")]),
            (
                "similar, one uploader (1 in 1000: exact)",
                vec![("uploader", "u7")],
            ),
        ] {
            let q = query(&pairs);
            let similar = VectorSearch {
                vector: &probe,
                exclude: None,
                depth: search::SearchSettings::default().similar_depth,
                ef: search::SearchSettings::default().ef,
            };
            let total = catalogue.search(&q, None, Some(similar)).unwrap().total;
            let (p50, p99) = time(args.runs, || {
                catalogue.search(&q, None, Some(similar)).unwrap()
            });
            println!("{name:<44} {p50:>6.2} / {p99:>6.2} ({total})");
        }
    }
}
