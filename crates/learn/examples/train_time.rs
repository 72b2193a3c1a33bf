//! How long training takes: `cargo run --release -p learn --example train_time [N] [DIM]`.
//! Synthetic, L2-normalised embeddings in two overlapping clouds (a quarter
//! positives); prints the time and the out-of-fold metrics.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(1000, |a| a.parse().expect("N"));
    let dim: usize = args.next().map_or(1280, |a| a.parse().expect("DIM"));
    let mut state = 42u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
    };
    let centre_a: Vec<f32> = (0..dim).map(|_| next()).collect();
    let centre_b: Vec<f32> = (0..dim).map(|_| next()).collect();
    let mut cloud = |centre: &[f32], k: usize| -> Vec<Vec<f32>> {
        (0..k)
            .map(|_| {
                let v: Vec<f32> = centre.iter().map(|c| c + 1.5 * next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    };
    let examples = learn::Examples {
        positives: cloud(&centre_a, n / 4),
        negatives: cloud(&centre_b, n - n / 4),
        background_negatives: 0,
    };
    let started = Instant::now();
    let trained = learn::train(&examples, &learn::Options::default()).expect("trains");
    let m = trained.metrics;
    println!(
        "{n} examples x {dim} dims: trained in {:.2} s ({} folds x {} strengths + 1 refit); out-of-fold AP {:.3}, precision {:.3}, recall {:.3} at {:.3}, l2 {}",
        started.elapsed().as_secs_f64(),
        m.folds,
        learn::L2_GRID.len(),
        m.ap,
        m.precision,
        m.recall,
        m.threshold,
        m.l2
    );
}
