//! Which model a personal aesthetic head should be, chosen by measurement.
//!
//! Over the real embeddings of labelled stock photographs and simulated
//! users with consistent tastes (`bench/aesthetics.py` writes both and
//! runs this), it trains each candidate on the same draws of n liked and n
//! disliked photos and scores the held-out photos:
//!
//! - `logistic`: class-balanced logistic regression on the embedding, the
//!   regularisation chosen by cross-validation ([`learn::Linear`]);
//! - `offset`: the same, as an offset on the global head (started from its
//!   weights and regularised toward them);
//! - `mlp`: one hidden layer of 16 ReLU units, trained by full-batch Adam,
//!   its weight decay chosen by the same cross-validation;
//! - `global`: the global head alone (no personal training);
//! - `random`: a random ranking.
//!
//!   cargo run --release -p pipeline --example head_choice -- DB TASTES [--signals 4,5,10,20,50] [--draws 3]
//!
//! DB is the SQLite file of a server that analysed the photos and trained a
//! global head (or a `postgres://` URL). TASTES has a line per photo:
//! `photo id<TAB>1 if held out else 0<TAB>the tastes it belongs to,
//! comma-separated`, and a first line `# tastes: a,b,c` naming every taste.

use std::time::{Duration, Instant};

use learn::{Examples, Family, Linear, Logistic, Options, Problem};
use pipeline::config::MetadataConfig;
use pipeline::feedback::GLOBAL_HEAD;
use pipeline::MetaStore;

/// SplitMix64: reproducible draws and initial weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

/// One hidden layer: `sigmoid(w2 · relu(W1 x + b1) + b2)`.
struct Net {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: f32,
}

impl Net {
    fn hidden(&self, x: &[f32], out: &mut [f32]) {
        let d = x.len();
        for (j, h) in out.iter_mut().enumerate() {
            let row = &self.w1[j * d..(j + 1) * d];
            let z: f32 = row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + self.b1[j];
            *h = z.max(0.0);
        }
    }

    fn score(&self, x: &[f32]) -> f32 {
        let mut h = vec![0.0; self.b1.len()];
        self.hidden(x, &mut h);
        let z = h.iter().zip(&self.w2).map(|(a, b)| a * b).sum::<f32>() + self.b2;
        1.0 / (1.0 + (-z).exp())
    }
}

/// The MLP candidate: 16 hidden units, 150 full-batch Adam steps.
struct Mlp;

const HIDDEN: usize = 16;
const STEPS: usize = 150;

impl Family for Mlp {
    type Model = Net;

    fn grid(&self) -> &[f64] {
        &[1e-2, 1e-3, 1e-4]
    }

    fn fit(&self, p: &Problem<'_>, l2: f64, _: &Options) -> Net {
        let d = p.dim;
        let mut rng = Rng(17);
        let scale = (6.0 / (d + HIDDEN) as f32).sqrt();
        let mut net = Net {
            w1: (0..d * HIDDEN).map(|_| rng.symmetric() * scale).collect(),
            b1: vec![0.0; HIDDEN],
            w2: (0..HIDDEN).map(|_| rng.symmetric() * 0.5).collect(),
            b2: 0.0,
        };
        let total: f64 = p.weights.iter().sum();
        let l2 = l2 as f32;
        // Adam's moments for every parameter, in the order w1, b1, w2, b2.
        let n_params = d * HIDDEN + 2 * HIDDEN + 1;
        let (mut m, mut v) = (vec![0.0f32; n_params], vec![0.0f32; n_params]);
        let mut grad = vec![0.0f32; n_params];
        let mut h = vec![0.0f32; HIDDEN];
        let (lr, beta1, beta2, eps) = (0.01f32, 0.9f32, 0.999f32, 1e-8f32);
        for step in 1..=STEPS {
            grad.iter_mut().for_each(|g| *g = 0.0);
            for ((x, &y), &w) in p.rows.iter().zip(&p.labels).zip(&p.weights) {
                net.hidden(x, &mut h);
                let z = h.iter().zip(&net.w2).map(|(a, b)| a * b).sum::<f32>() + net.b2;
                let r = (w / total) as f32 * (1.0 / (1.0 + (-z).exp()) - f32::from(u8::from(y)));
                let (g1, rest) = grad.split_at_mut(d * HIDDEN);
                let (gb1, rest) = rest.split_at_mut(HIDDEN);
                let (gw2, gb2) = rest.split_at_mut(HIDDEN);
                gb2[0] += r;
                for j in 0..HIDDEN {
                    gw2[j] += r * h[j];
                    if h[j] > 0.0 {
                        let back = r * net.w2[j];
                        gb1[j] += back;
                        for (g, v) in g1[j * d..(j + 1) * d].iter_mut().zip(x.iter()) {
                            *g += back * v;
                        }
                    }
                }
            }
            let params = net
                .w1
                .iter_mut()
                .chain(net.b1.iter_mut())
                .chain(net.w2.iter_mut())
                .chain(std::iter::once(&mut net.b2));
            let (c1, c2) = (1.0 - beta1.powi(step as i32), 1.0 - beta2.powi(step as i32));
            for (i, theta) in params.enumerate() {
                let decay = if i < d * HIDDEN || (d * HIDDEN + HIDDEN..n_params - 1).contains(&i) {
                    l2 * *theta
                } else {
                    0.0
                };
                let g = grad[i] + decay;
                m[i] = beta1 * m[i] + (1.0 - beta1) * g;
                v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
                *theta -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
            }
        }
        net
    }

    fn score(&self, model: &Net, x: &[f32]) -> f32 {
        model.score(x)
    }
}

/// The chance a positive outscores a negative (ties count half).
fn auc(scores: &[f32], labels: &[bool]) -> f64 {
    let mut wins = 0.0;
    let (mut pos, mut neg) = (0usize, 0usize);
    for (s, &l) in scores.iter().zip(labels) {
        if !l {
            continue;
        }
        pos += 1;
        for (t, _) in scores.iter().zip(labels).filter(|(_, &m)| !m) {
            wins += if s > t {
                1.0
            } else if s == t {
                0.5
            } else {
                0.0
            };
        }
    }
    for &l in labels {
        neg += usize::from(!l);
    }
    wins / (pos * neg).max(1) as f64
}

struct Photo {
    embedding: Vec<f32>,
    held_out: bool,
    tastes: Vec<String>,
}

const CANDIDATES: [&str; 5] = ["logistic", "offset", "mlp", "global", "random"];

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "head_choice DB TASTES [--signals 4,5,10,20,50] [--draws 3]";
    let (db, tastes_file) = match (args.first(), args.get(1)) {
        (Some(a), Some(b)) if !a.starts_with("--") => (a.clone(), b.clone()),
        _ => {
            eprintln!("usage: {usage}");
            std::process::exit(2);
        }
    };
    let flag = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let sizes: Vec<usize> = flag("--signals", "4,5,10,20,50")
        .split(',')
        .map(|n| n.parse().expect("--signals takes numbers"))
        .collect();
    let draws: u64 = flag("--draws", "3")
        .parse()
        .expect("--draws takes a number");

    let metadata = if db.starts_with("postgres") {
        MetadataConfig::Postgres {
            url: db.clone(),
            schema: "public".into(),
            connections: 2,
        }
    } else {
        MetadataConfig::Sqlite {
            path: db.clone().into(),
        }
    };
    let store = MetaStore::open(&metadata).await.unwrap_or_else(|e| {
        eprintln!("{db}: {e}");
        std::process::exit(1);
    });
    let Some(global) = store
        .personal_head(GLOBAL_HEAD)
        .await
        .expect("the store reads")
    else {
        eprintln!("{db}: no global aesthetic head yet (run bench/aesthetics.py, which trains one)");
        std::process::exit(1);
    };
    let text = std::fs::read_to_string(&tastes_file).unwrap_or_else(|e| {
        eprintln!("{tastes_file}: {e}");
        std::process::exit(1);
    });
    let mut names: Vec<String> = Vec::new();
    let mut rows: Vec<(String, bool, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(list) = line.strip_prefix("# tastes: ") {
            names = list.split(',').map(str::to_string).collect();
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(id), Some(held), tastes) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        let tastes = tastes
            .unwrap_or("")
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        rows.push((id.to_string(), held == "1", tastes));
    }
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut embeddings: std::collections::HashMap<String, Vec<f32>> = store
        .embeddings_of(&ids, &global.model)
        .await
        .expect("the store reads")
        .into_iter()
        .map(|(id, e)| (id, e.0))
        .collect();
    let mut photos: Vec<(String, Photo)> = rows
        .into_iter()
        .filter_map(|(id, held_out, tastes)| {
            let embedding = embeddings.remove(&id)?;
            Some((
                id,
                Photo {
                    embedding,
                    held_out,
                    tastes,
                },
            ))
        })
        .collect();
    photos.sort_by(|a, b| a.0.cmp(&b.0));
    let (pool, test): (Vec<&Photo>, Vec<&Photo>) =
        photos.iter().map(|(_, p)| p).partition(|p| !p.held_out);
    println!(
        "{} photos with {} embeddings: {} to draw signals from, {} held out; global head from {} for / {} against; {} draws each\n",
        photos.len(),
        global.model,
        pool.len(),
        test.len(),
        global.positives,
        global.negatives,
        draws
    );
    let prior = Logistic {
        weights: global.weights.clone(),
        bias: global.bias,
    };
    let options = Options {
        min_positives: 2,
        ..Options::default()
    };
    let offset = Linear { prior: Some(prior) };
    let mut times = [Duration::ZERO; 3];
    let mut fits = 0u32;
    println!("mean held-out AUC over the draws (standard deviation)\n");
    println!("| taste | n for / against | {} |", CANDIDATES.join(" | "));
    println!("|---|---:|{}", "---:|".repeat(CANDIDATES.len()));
    let mut overall = vec![vec![0.0f64; CANDIDATES.len()]; sizes.len()];
    for taste in &names {
        let labels: Vec<bool> = test.iter().map(|p| p.tastes.contains(taste)).collect();
        for (si, &n) in sizes.iter().enumerate() {
            let mut aucs = vec![Vec::new(); CANDIDATES.len()];
            let mut counts = (0, 0);
            for draw in 0..draws {
                let mut rng = Rng(1 + draw * 7919 + n as u64);
                let mut yes: Vec<&Photo> = pool
                    .iter()
                    .copied()
                    .filter(|p| p.tastes.contains(taste))
                    .collect();
                let mut no: Vec<&Photo> = pool
                    .iter()
                    .copied()
                    .filter(|p| !p.tastes.contains(taste))
                    .collect();
                rng.shuffle(&mut yes);
                rng.shuffle(&mut no);
                let examples = Examples {
                    positives: yes.iter().take(n).map(|p| p.embedding.clone()).collect(),
                    negatives: no.iter().take(n).map(|p| p.embedding.clone()).collect(),
                    background_negatives: 0,
                };
                counts = (examples.positives.len(), examples.negatives.len());
                let score_all = |f: &dyn Fn(&[f32]) -> f32| -> Vec<f32> {
                    test.iter().map(|p| f(&p.embedding)).collect()
                };
                let started = Instant::now();
                let plain =
                    learn::train_family(&Linear::default(), &examples, &options, &mut |_, _| {})
                        .expect("trains");
                times[0] += started.elapsed();
                let started = Instant::now();
                let shifted = learn::train_family(&offset, &examples, &options, &mut |_, _| {})
                    .expect("trains");
                times[1] += started.elapsed();
                let started = Instant::now();
                let mlp =
                    learn::train_family(&Mlp, &examples, &options, &mut |_, _| {}).expect("trains");
                times[2] += started.elapsed();
                fits += 1;
                let scores = [
                    score_all(&|x| plain.model.score(x)),
                    score_all(&|x| shifted.model.score(x)),
                    score_all(&|x| mlp.model.score(x)),
                    score_all(&|x| global.score(x)),
                    test.iter().map(|_| rng.symmetric()).collect(),
                ];
                for (c, s) in scores.iter().enumerate() {
                    aucs[c].push(auc(s, &labels));
                }
            }
            let cells: Vec<String> = aucs
                .iter()
                .enumerate()
                .map(|(c, a)| {
                    let mean = a.iter().sum::<f64>() / a.len() as f64;
                    let sd =
                        (a.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
                    overall[si][c] += mean / names.len() as f64;
                    format!("{mean:.3} ({sd:.3})")
                })
                .collect();
            println!(
                "| {taste} | {} / {} | {} |",
                counts.0,
                counts.1,
                cells.join(" | ")
            );
        }
    }
    for (si, &n) in sizes.iter().enumerate() {
        let cells: Vec<String> = overall[si].iter().map(|m| format!("**{m:.3}**")).collect();
        println!("| every taste | {n} / {n} | {} |", cells.join(" | "));
    }
    let per = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(fits.max(1));
    println!(
        "\ntraining time per head (mean over every taste, n and draw): logistic {:.0} ms, offset {:.0} ms, mlp {:.0} ms",
        per(times[0]),
        per(times[1]),
        per(times[2])
    );
}
