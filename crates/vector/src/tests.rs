use super::*;

/// Reproducible data.
struct Rng(SplitMix);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0.signed()
    }
}

fn normalised(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.into_iter().map(|x| x / n).collect()
}

/// `n` vectors of `dims` in `clusters` clusters: photo embeddings are
/// clustered (a catalogue has many near-duplicates), which is where a
/// graph index is tested hardest.
fn clustered(n: usize, dims: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng(SplitMix(seed));
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| normalised((0..dims).map(|_| rng.next()).collect()))
        .collect();
    (0..n)
        .map(|i| {
            let c = &centres[i % clusters];
            normalised(c.iter().map(|x| x + 0.35 * rng.next()).collect())
        })
        .collect()
}

fn build(data: &[Vec<f32>]) -> Hnsw {
    let mut index = Hnsw::new(data[0].len(), Params::default());
    for v in data {
        index.insert(v).unwrap();
    }
    index
}

fn recall(
    index: &Hnsw,
    queries: &[Vec<f32>],
    k: usize,
    ef: usize,
    keep: &dyn Fn(u32) -> bool,
) -> f64 {
    let mut hits = 0;
    for q in queries {
        let exact: HashSet<u32> = index.brute_force(q, k, keep).iter().map(|r| r.0).collect();
        let found = index.search(q, k, ef, keep).unwrap();
        hits += found.iter().filter(|r| exact.contains(&r.0)).count();
    }
    hits as f64 / (queries.len() * k) as f64
}

#[test]
fn finds_the_exact_neighbours_almost_always() {
    let data = clustered(3_000, 64, 30, 1);
    let index = build(&data);
    let queries = clustered(100, 64, 30, 2);
    let r = recall(&index, &queries, 10, 64, &|_| true);
    assert!(r >= 0.95, "recall@10 {r}");
    // A vector in the index finds itself first.
    let top = index.search(&data[123], 1, 32, &|_| true).unwrap();
    assert_eq!(top[0].0, 123);
    assert!((top[0].1 - 1.0).abs() < 1e-5);
}

#[test]
fn a_filtered_search_still_returns_k_results_when_they_exist() {
    let data = clustered(2_000, 32, 20, 3);
    let index = build(&data);
    let queries = clustered(50, 32, 20, 4);
    // One node in 50 passes: far fewer than ef near any query.
    let rare = |n: u32| n % 50 == 7;
    for q in &queries {
        let found = index.search(q, 10, 32, &rare).unwrap();
        assert_eq!(found.len(), 10);
        assert!(found.iter().all(|r| rare(r.0)));
    }
    let r = recall(&index, &queries, 10, 32, &rare);
    assert!(r >= 0.9, "filtered recall@10 {r}");
    // A looser filter (1 in 4) is walked through the graph.
    let quarter = |n: u32| n % 4 == 1;
    for q in &queries {
        let found = index.search(q, 10, 32, &quarter).unwrap();
        assert_eq!(found.len(), 10);
        assert!(found.iter().all(|r| quarter(r.0)));
    }
    let r = recall(&index, &queries, 10, 32, &quarter);
    assert!(r >= 0.9, "recall@10 through the graph with a filter: {r}");
    // Fewer passing nodes than k: all of them.
    let few = |n: u32| n < 3;
    assert_eq!(index.search(&queries[0], 10, 32, &few).unwrap().len(), 3);
}

#[test]
fn deleted_vectors_are_never_returned_but_still_route() {
    let data = clustered(1_500, 32, 15, 5);
    let mut index = build(&data);
    for n in (0..1_500).step_by(2) {
        assert!(index.delete(n));
    }
    assert!(!index.delete(0), "already deleted");
    assert_eq!(index.len(), 750);
    let queries = clustered(40, 32, 15, 6);
    for q in &queries {
        let found = index.search(q, 10, 48, &|_| true).unwrap();
        assert_eq!(found.len(), 10);
        assert!(found.iter().all(|r| r.0 % 2 == 1));
    }
    assert!(recall(&index, &queries, 10, 48, &|_| true) >= 0.9);
}

#[test]
fn the_same_insertions_give_the_same_graph_and_the_file_reads_back() {
    let data = clustered(500, 16, 5, 7);
    let a = build(&data);
    let b = build(&data);
    assert_eq!(a, b, "deterministic");
    let mut bytes = Vec::new();
    a.write(&mut bytes).unwrap();
    let back = Hnsw::read(&mut bytes.as_slice()).unwrap();
    assert_eq!(back, a);
    // The read index keeps growing the same way.
    let (mut a, mut back) = (a, back);
    let more = clustered(10, 16, 5, 8);
    for v in &more {
        assert_eq!(a.insert(v).unwrap(), back.insert(v).unwrap());
    }
    assert_eq!(a, back);
    // A damaged file is refused, not trusted.
    assert!(matches!(
        Hnsw::read(&mut &b"DRHNSW99"[..]),
        Err(FileError::Magic(_))
    ));
    let mut cut = bytes.clone();
    cut.truncate(bytes.len() - 3);
    assert!(Hnsw::read(&mut cut.as_slice()).is_err());
    let mut bad = bytes.clone();
    let last = bad.len() - 4;
    bad[last..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Hnsw::read(&mut bad.as_slice()),
        Err(FileError::Corrupt(_))
    ));
}

#[test]
fn wrong_dimensions_and_empty_indexes() {
    let mut index = Hnsw::new(4, Params::default());
    assert!(index
        .search(&[1.0, 0.0, 0.0, 0.0], 5, 10, &|_| true)
        .unwrap()
        .is_empty());
    assert_eq!(
        index.insert(&[1.0, 0.0]),
        Err(VectorError::Dimensions {
            expected: 4,
            found: 2
        })
    );
    index.insert(&[1.0, 0.0, 0.0, 0.0]).unwrap();
    assert!(index.search(&[1.0], 1, 10, &|_| true).is_err());
    assert_eq!(
        index
            .search(&[1.0, 0.0, 0.0, 0.0], 0, 10, &|_| true)
            .unwrap(),
        vec![]
    );
}
