//! The vector index against exact search, on real photo embeddings.
//!
//! Reads the embeddings `darkroom analyze --embedding` printed (one JSON
//! object per photo, `embedding` = base64 of little-endian float32), and
//! for each size builds an index of that many vectors: the real ones, then
//! perturbed copies (a real embedding blended with another real one, weight
//! 0.5 to 1 on the first, plus noise of 0.01 per dimension, L2-normalised
//! again: new photos that look like the real ones and each other, as a
//! catalogue's do). Queries are more such copies, not in the index. For each
//! size it prints recall@10 against brute force, queries/s on one core, p50
//! and p99 latency, build time and memory, with brute force beside it as
//! the peer.
//!
//!   darkroom analyze --embedding var/corpus/stock > /tmp/embeddings.jsonl
//!   cargo run --release -p vector --example ann_bench -- /tmp/embeddings.jsonl 10000 100000
//!
//! With `--dump DIR` it also writes each size's vectors and queries
//! (`base-<size>.f32`, `queries-<size>.f32`: little-endian float32, row
//! after row) for `bench/ann.py` to put FAISS and usearch on the same data,
//! and the graph it built (`hnsw-<size>.bin`, `Hnsw::write`'s format).

use std::io::{BufRead, Write};
use std::time::Instant;

use vector::{Hnsw, Params, SplitMix};

const K: usize = 10;
const QUERIES: usize = 500;
const NOISE: f32 = 0.01;

/// Reproducible noise.
struct Rng(SplitMix);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0.signed()
    }

    /// Roughly normal: the sum of four uniforms.
    fn normal(&mut self) -> f32 {
        (self.next() + self.next() + self.next() + self.next()) * 0.866
    }
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn decode(b64: &str) -> Vec<f32> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut lookup = [0u8; 256];
    for (i, &c) in ALPHABET.iter().enumerate() {
        lookup[c as usize] = i as u8;
    }
    let mut bytes = Vec::with_capacity(b64.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in b64.as_bytes().iter().filter(|&&c| c != b'=') {
        acc = (acc << 6) | u32::from(lookup[c as usize]);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((acc >> bits) as u8);
        }
    }
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A new photo-like vector: a real embedding blended with another real one
/// (weight 0.5 to 1 on the first), plus noise, normalised again.
fn perturbed(real: &[Vec<f32>], i: usize, rng: &mut Rng) -> Vec<f32> {
    let a = &real[i % real.len()];
    let b = &real[((rng.next() + 1.0) * 0.5 * real.len() as f32) as usize % real.len()];
    let w = 0.75 + 0.25 * rng.next();
    normalised(
        a.iter()
            .zip(b)
            .map(|(x, y)| w * x + (1.0 - w) * y + NOISE * rng.normal())
            .collect(),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let dump = args.iter().position(|a| a == "--dump").map(|i| {
        let dir = std::path::PathBuf::from(args.get(i + 1).expect("--dump DIR"));
        args.drain(i..i + 2);
        std::fs::create_dir_all(&dir).expect("the dump folder");
        dir
    });
    let path = args
        .first()
        .expect("usage: ann_bench EMBEDDINGS.jsonl [SIZE ...]");
    let sizes: Vec<usize> = if args.len() > 1 {
        args[1..]
            .iter()
            .map(|s| s.parse().expect("a size"))
            .collect()
    } else {
        vec![10_000, 100_000]
    };
    let file = std::io::BufReader::new(std::fs::File::open(path).expect("the embeddings file"));
    let mut real = Vec::new();
    for line in file.lines() {
        let line = line.unwrap();
        let Some(start) = line.find("\"embedding\":\"") else {
            continue;
        };
        let rest = &line[start + 13..];
        let end = rest.find('"').expect("a closed string");
        real.push(decode(&rest[..end]));
    }
    assert!(!real.is_empty(), "no embeddings in {path}");
    let dims = real[0].len();
    println!(
        "{} real embeddings of {dims} dimensions from {path}; the rest blends of two real ones \
         plus noise {NOISE} per dimension; {QUERIES} queries, k = {K}, one core",
        real.len()
    );
    println!(
        "| vectors | index | recall@10 | queries/s | p50 ms | p99 ms | build s | memory MiB |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut rng = Rng(SplitMix(42));
    for &size in &sizes {
        let data: Vec<Vec<f32>> = (0..size)
            .map(|i| {
                if i < real.len() {
                    real[i].clone()
                } else {
                    perturbed(&real, i, &mut rng)
                }
            })
            .collect();
        let queries: Vec<Vec<f32>> = (0..QUERIES)
            .map(|i| perturbed(&real, i * 7, &mut rng))
            .collect();

        if let Some(dir) = &dump {
            for (name, rows) in [("base", &data), ("queries", &queries)] {
                let path = dir.join(format!("{name}-{size}.f32"));
                let mut w = std::io::BufWriter::new(std::fs::File::create(&path).expect("dumped"));
                for v in rows.iter().flatten() {
                    w.write_all(&v.to_le_bytes()).expect("dumped");
                }
                w.flush().expect("dumped");
            }
        }
        let started = Instant::now();
        let mut index = Hnsw::new(dims, Params::default());
        for v in &data {
            index.insert(v).unwrap();
        }
        let build = started.elapsed().as_secs_f64();
        drop(data);
        if let Some(dir) = &dump {
            // The graph itself, for examples that serve it (search's scale
            // example puts it behind a catalogue of a million photos).
            let path = dir.join(format!("hnsw-{size}.bin"));
            let mut w = std::io::BufWriter::new(std::fs::File::create(&path).expect("dumped"));
            index.write(&mut w).expect("dumped");
            w.flush().expect("dumped");
        }

        let exact: Vec<Vec<u32>> = queries
            .iter()
            .map(|q| {
                index
                    .brute_force(q, K, &|_| true)
                    .iter()
                    .map(|r| r.0)
                    .collect()
            })
            .collect();
        let run = |name: &str, search: &dyn Fn(&[f32]) -> Vec<u32>, build: f64, bytes: usize| {
            let mut latencies = Vec::with_capacity(QUERIES);
            let mut hits = 0;
            let all = Instant::now();
            for (q, truth) in queries.iter().zip(&exact) {
                let t = Instant::now();
                let found = search(q);
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                hits += found.iter().filter(|n| truth.contains(n)).count();
            }
            let qps = QUERIES as f64 / all.elapsed().as_secs_f64();
            latencies.sort_by(f64::total_cmp);
            println!(
                "| {size} | {name} | {:.3} | {qps:.0} | {:.2} | {:.2} | {build:.1} | {:.0} |",
                hits as f64 / (QUERIES * K) as f64,
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                bytes as f64 / (1 << 20) as f64
            );
        };
        for ef in [32, 64, 128] {
            run(
                &format!("HNSW M=16 ef={ef}"),
                &|q| {
                    index
                        .search(q, K, ef, &|_| true)
                        .unwrap()
                        .iter()
                        .map(|r| r.0)
                        .collect()
                },
                build,
                index.memory_bytes(),
            );
        }
        run(
            "brute force (peer)",
            &|q| {
                index
                    .brute_force(q, K, &|_| true)
                    .iter()
                    .map(|r| r.0)
                    .collect()
            },
            0.0,
            size * dims * 4,
        );
        // Filters inside the search: one photo in 4 (walked through the
        // graph) and one in 20 (answered exactly over the passing photos).
        for every in [4u32, 20] {
            let keep = move |n: u32| n % every == 3;
            let mut hits = 0;
            for q in &queries {
                let truth: Vec<u32> = index.brute_force(q, K, &keep).iter().map(|r| r.0).collect();
                let found = index.search(q, K, 64, &keep).unwrap();
                hits += found.iter().filter(|r| truth.contains(&r.0)).count();
            }
            println!(
                "| {size} | HNSW ef=64, filter passing 1 in {every} | {:.3} | | | | | |",
                hits as f64 / (QUERIES * K) as f64
            );
        }
    }
}
