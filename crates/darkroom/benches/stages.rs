//! The stage-sum limit: what one photo costs on one core, stage by stage, on
//! real camera JPEGs (Debian mate-backgrounds, 1280×1024 to 5640×3172):
//! decode (exact and shrink-on-load), resize for each model, BRISQUE, and each
//! model at batch 1, 8 and 32 with one ONNX Runtime thread. Also how far
//! `fast` decoding moves EfficientNet's top-1 from `exact`.
//!
//! Run: `cargo bench -p darkroom --bench stages` (after `darkroom models fetch`).
//! `DARKROOM_BENCH_REPS` (default 3) sets the repetitions; the best is kept.

use std::time::Instant;

use imaging::{decode_to_fit, probe, DecodeMode, Decoded, Limits, PreprocessSpec};
use models::analyzer::{quality_score, Analyzer, LoadOptions};
use models::backend::Backend;
use models::brisque::Brisque;
use models::concepts::softmax;
use models::onnx_runtime::{init_runtime, OrtBackend};
use models::{Home, ModelEntry, ModelKind, Repository, Tensor};

fn reps() -> usize {
    std::env::var("DARKROOM_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// Best-of-`reps` wall time of `f` over all photos, in ms per photo.
fn per_photo<T>(photos: usize, mut f: impl FnMut() -> T) -> f64 {
    (0..reps())
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed().as_secs_f64() * 1000.0 / photos as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn with_mode(entry: &ModelEntry, mode: DecodeMode) -> PreprocessSpec {
    let mut spec = entry.config.preprocess.clone().expect("preprocess");
    spec.decode = mode;
    spec
}

fn decode_for(bytes: &[u8], spec: &PreprocessSpec) -> Decoded {
    decode_to_fit(bytes, &Limits::default(), |(w, h)| {
        spec.decode_min_size(w, h)
    })
    .expect("decode")
}

fn tensor(spec: &PreprocessSpec, decoded: &Decoded) -> Vec<f32> {
    let resized = spec.resize_decoded(decoded);
    let mut out = vec![0.0; spec.tensor_len()];
    spec.write_tensor(&resized.image, &mut out);
    out
}

/// ms per image running `inputs` through `backend` in batches of `batch`.
fn inference(
    backend: &OrtBackend,
    spec: &PreprocessSpec,
    inputs: &[Vec<f32>],
    batch: usize,
) -> f64 {
    let shape = [3, spec.height as usize, spec.width as usize];
    // Enough images that every batch is full: cycle through the photos.
    let total = batch.max(inputs.len()).div_ceil(batch) * batch;
    let all: Vec<&Vec<f32>> = inputs.iter().cycle().take(total).collect();
    let _ = backend.infer(Tensor::new(
        [&[1usize][..], &shape].concat(),
        all[0].clone(),
    ));
    per_photo(total, || {
        for chunk in all.chunks(batch) {
            let data: Vec<f32> = chunk.iter().flat_map(|v| v.iter().copied()).collect();
            backend
                .infer(Tensor::new([&[chunk.len()][..], &shape].concat(), data))
                .expect("inference");
        }
    })
}

fn main() {
    let home = Home::discover();
    let repo = Repository::open(&home.models())
        .expect("model repository: run `darkroom models fetch` first");
    init_runtime(&home.ort_library()).expect("ONNX Runtime");
    let mut paths: Vec<_> = std::fs::read_dir(home.camera_photos())
        .expect("camera photos: run `darkroom models fetch` first")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    paths.sort();
    let all: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(p).expect("read"),
            )
        })
        .collect();
    // The 18 MP progressive photo costs ten times the others: reported on its own.
    let (big, photos): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(name, _)| name.starts_with("Elephants"));
    let photos: Vec<Vec<u8>> = photos.into_iter().map(|(_, b)| b).collect();
    let n = photos.len();
    let megapixels: f64 = photos
        .iter()
        .map(|b| {
            let h = probe(b, &Limits::default()).unwrap();
            h.width as f64 * h.height as f64 / 1e6
        })
        .sum::<f64>()
        / n as f64;
    println!(
        "{n} camera JPEGs (mate-backgrounds nature/), mean {megapixels:.1} MP; one thread; best of {} runs\n",
        reps()
    );

    let effnet = repo.first_of(ModelKind::Classifier).expect("classifier");
    let face = repo
        .first_of(ModelKind::FaceDetector)
        .expect("face detector");
    let (e_exact, e_fast) = (
        with_mode(effnet, DecodeMode::Exact),
        with_mode(effnet, DecodeMode::Fast),
    );
    let f_fast = with_mode(face, DecodeMode::Fast);

    println!("{:<44} {:>10}", "stage", "ms/photo");
    let row = |name: &str, ms: f64| println!("{name:<44} {ms:>10.2}");
    let decode_exact = per_photo(n, || {
        photos
            .iter()
            .for_each(|b| drop(std::hint::black_box(decode_for(b, &e_exact))))
    });
    row("decode exact (full)", decode_exact);
    let decode_fast = per_photo(n, || {
        photos
            .iter()
            .for_each(|b| drop(std::hint::black_box(decode_for(b, &e_fast))))
    });
    row("decode fast (DCT shrink-on-load, >= 2x 256)", decode_fast);
    let exact_decoded: Vec<Decoded> = photos.iter().map(|b| decode_for(b, &e_exact)).collect();
    let fast_decoded: Vec<Decoded> = photos.iter().map(|b| decode_for(b, &e_fast)).collect();
    let resize_exact = per_photo(n, || {
        exact_decoded
            .iter()
            .for_each(|d| drop(std::hint::black_box(tensor(&e_exact, d))))
    });
    row("resize+normalise effnet from full decode", resize_exact);
    let resize_fast = per_photo(n, || {
        fast_decoded
            .iter()
            .for_each(|d| drop(std::hint::black_box(tensor(&e_fast, d))))
    });
    row("resize+normalise effnet from fast decode", resize_fast);
    let resize_face = per_photo(n, || {
        fast_decoded
            .iter()
            .for_each(|d| drop(std::hint::black_box(tensor(&f_fast, d))))
    });
    row("letterbox+normalise blazeface (fast decode)", resize_face);

    let quality = repo.first_of(ModelKind::Quality).expect("quality model");
    let spec = quality.config.brisque.clone().expect("brisque spec");
    let brisque_model =
        Brisque::load(&quality.path(&spec.model), &quality.path(&spec.range)).expect("brisque");
    let brisque = per_photo(n, || {
        fast_decoded
            .iter()
            .map(|d| quality_score(&brisque_model, &d.image, spec.max_side))
            .sum::<f64>()
    });
    row(
        &format!("brisque (<= {} px long side)", spec.max_side),
        brisque,
    );

    // Everything the CPU pool does per photo in the service: one decode for
    // all models, every model's input, BRISQUE.
    let analyzer = |mode| {
        Analyzer::load(
            &repo,
            &LoadOptions {
                models: Vec::new(),
                intra_threads: 1,
                decode: Some(mode),
                instances: Some(1),
            },
        )
        .expect("models")
    };
    let (all_fast, all_exact) = (analyzer(DecodeMode::Fast), analyzer(DecodeMode::Exact));
    let prepare_fast = per_photo(n, || {
        photos.iter().for_each(|b| {
            drop(std::hint::black_box(
                all_fast
                    .prepare(b, &Limits::default(), &all_fast.select_all())
                    .unwrap(),
            ))
        })
    });
    row("prepare, all models, fast (decode once)", prepare_fast);
    let prepare_exact = per_photo(n, || {
        photos.iter().for_each(|b| {
            drop(std::hint::black_box(
                all_exact
                    .prepare(b, &Limits::default(), &all_exact.select_all())
                    .unwrap(),
            ))
        })
    });
    row("prepare, all models, exact (decode once)", prepare_exact);

    let effnet_backend = OrtBackend::load(effnet, 1, 1).expect("effnet");
    let face_backend = OrtBackend::load(face, 1, 1).expect("blazeface");
    let e_inputs: Vec<Vec<f32>> = fast_decoded.iter().map(|d| tensor(&e_fast, d)).collect();
    let f_inputs: Vec<Vec<f32>> = fast_decoded.iter().map(|d| tensor(&f_fast, d)).collect();
    let mut at8 = (0.0, 0.0);
    for batch in [1, 8, 32] {
        let e = inference(&effnet_backend, &e_fast, &e_inputs, batch);
        let f = inference(&face_backend, &f_fast, &f_inputs, batch);
        row(&format!("efficientnet-lite0 inference, batch {batch}"), e);
        row(&format!("blazeface inference, batch {batch}"), f);
        if batch == 8 {
            at8 = (e, f);
        }
    }
    let sum_fast = prepare_fast + at8.0 + at8.1;
    let sum_exact = prepare_exact + at8.0 + at8.1;
    println!();
    row("stage sum, fast decode, batch 8", sum_fast);
    row("stage sum, exact decode, batch 8", sum_exact);
    println!(
        "{:<44} {:>10.1}",
        "limit: photos/s per core (fast)",
        1000.0 / sum_fast
    );
    println!(
        "{:<44} {:>10.1}",
        "limit: photos/s per core (exact)",
        1000.0 / sum_exact
    );
    println!(
        "{:<44} {:>10.2}x",
        "fast speed-up, decode+resize (effnet)",
        (decode_exact + resize_exact) / (decode_fast + resize_fast)
    );
    println!(
        "{:<44} {:>10.2}x",
        "fast speed-up, prepare (all models)",
        prepare_exact / prepare_fast
    );
    println!(
        "{:<44} {:>10.2}x",
        "fast speed-up, whole stage sum",
        sum_exact / sum_fast
    );

    // How far fast decoding moves the classifier, photo by photo.
    let e_exact_inputs: Vec<Vec<f32>> = exact_decoded.iter().map(|d| tensor(&e_exact, d)).collect();
    let top1 = |inputs: &[Vec<f32>]| -> Vec<(usize, f32, Vec<f32>)> {
        inputs
            .iter()
            .map(|t| {
                let out = effnet_backend
                    .infer(Tensor::new(vec![1, 3, 224, 224], t.clone()))
                    .unwrap();
                let p = softmax(out["logits"].item(0));
                let (i, &best) = p
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap();
                (i, best, p)
            })
            .collect()
    };
    let (exact, fast) = (top1(&e_exact_inputs), top1(&e_inputs));
    let diffs: Vec<f32> = exact
        .iter()
        .zip(&fast)
        .map(|(e, f)| (e.2[e.0] - f.2[e.0]).abs())
        .collect();
    let changed = exact.iter().zip(&fast).filter(|(e, f)| e.0 != f.0).count();
    for (name, bytes) in &big {
        let h = probe(bytes, &Limits::default()).unwrap();
        let exact = per_photo(1, || decode_for(bytes, &e_exact));
        let fast = per_photo(1, || decode_for(bytes, &e_fast));
        println!(
            "\n{name} ({}x{}, progressive): decode exact {exact:.1} ms, fast {fast:.1} ms ({:.2}x)",
            h.width,
            h.height,
            exact / fast
        );
    }
    println!(
        "\nfast vs exact on {n} photos: top-1 probability |diff| max {:.4}, mean {:.4}; top-1 class changed on {changed}/{n}",
        diffs.iter().copied().fold(0.0, f32::max),
        diffs.iter().sum::<f32>() / n as f32
    );
}
