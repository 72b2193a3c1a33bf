//! BRISQUE against OpenCV: the scikit-image photos in the home's `samples/`
//! (put there by `darkroom models fetch`) and the degraded variants committed in
//! `tests/fixtures/brisque/`, each within ±2 of
//! `cv2.quality.QualityBRISQUE_compute` with the same model files. The
//! references and fixtures come from `scripts/brisque_reference.py`.

use std::path::{Path, PathBuf};

use models::brisque::{quality_from_score, Brisque, BrisqueError};

/// Score points either way; the port is usually within 0.01.
/// How far from OpenCV's score ours may be: measured within 0.002 (the
/// JPEG decodes may differ from OpenCV's libjpeg by a level), and 0.01 is
/// what the README promises.
const TOLERANCE: f64 = 0.01;
const PHOTOS: [&str; 3] = ["astronaut.png", "coffee.png", "rocket.jpg"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/brisque")
}

/// A file of the Darkroom home, or a failure that says how to get it.
fn fetched(rel: &str) -> PathBuf {
    let path = models::Home::discover().root.join(rel);
    assert!(
        path.is_file(),
        "{} is missing: run `darkroom models fetch` first",
        path.display()
    );
    path
}

fn model_paths() -> (PathBuf, PathBuf) {
    (
        fetched("models/brisque/brisque_model_live.yml"),
        fetched("models/brisque/brisque_range_live.yml"),
    )
}

fn brisque() -> Brisque {
    let (model, range) = model_paths();
    Brisque::load(&model, &range).expect("OpenCV's BRISQUE model loads")
}

fn references() -> serde_json::Value {
    let path = fixtures().join("references.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("references.json parses")
}

/// Decodes with Darkroom's own decoder (libjpeg-turbo for JPEG: its pixels
/// may differ from OpenCV's libjpeg by a level, well inside the tolerance).
fn decode(path: &Path) -> imaging::RgbImage {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    imaging::decode(&data, &imaging::DecodeRequest::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .image
}

/// Prints every comparison, then fails listing those out of tolerance.
fn check(rows: &[(String, f64, f64)]) {
    println!("{:<28}{:>10}{:>10}{:>8}", "image", "ours", "opencv", "diff");
    let mut failed = Vec::new();
    for (name, ours, want) in rows {
        // OpenCV clamps its score to 0..100 and ours is raw: a reference at
        // either end could hide a score outside, so none may be there, and
        // the raw scores are compared.
        assert!(
            *want > 0.0 && *want < 100.0,
            "{name}: OpenCV's {want} may be clamped; pick another reference"
        );
        let diff = ours - want;
        println!("{name:<28}{ours:>10.3}{want:>10.3}{diff:>8.3}");
        if diff.is_nan() || diff.abs() > TOLERANCE {
            failed.push(name.as_str());
        }
    }
    assert!(
        failed.is_empty(),
        "more than ±{TOLERANCE} from OpenCV: {failed:?}"
    );
}

#[test]
fn photos_score_as_opencv_does() {
    let brisque = brisque();
    let refs = references();
    let rows: Vec<_> = PHOTOS
        .iter()
        .map(|photo| {
            let image = decode(&fetched(&format!("samples/{photo}")));
            let score = brisque.score_rgb(&image.data, image.width, image.height);
            let want = refs["photos"][photo]["original"]
                .as_f64()
                .expect("reference score");
            (photo.to_string(), score, want)
        })
        .collect();
    check(&rows);
}

#[test]
fn degraded_fixtures_score_as_opencv_does() {
    let brisque = brisque();
    let refs = references();
    let fixtures_ref = refs["fixtures"]
        .as_object()
        .expect("fixtures in references.json");
    assert!(
        fixtures_ref.len() >= 4,
        "expected blurred and noisy variants of 2 photos"
    );
    let rows: Vec<_> = fixtures_ref
        .iter()
        .map(|(name, info)| {
            let image = decode(&fixtures().join(name));
            // Grey fixtures (what BRISQUE sees) decode to R = G = B, which the
            // grey conversion maps back exactly.
            let score = brisque.score_rgb(&image.data, image.width, image.height);
            (
                name.clone(),
                score,
                info["score"].as_f64().expect("reference score"),
            )
        })
        .collect();
    check(&rows);
}

#[test]
fn degradation_lowers_quality() {
    let brisque = brisque();
    for photo in ["coffee", "rocket"] {
        let score = |variant: &str| {
            let image = decode(&fixtures().join(format!("{photo}_{variant}.png")));
            brisque.score_rgb(&image.data, image.width, image.height)
        };
        let ext = if photo == "rocket" { "jpg" } else { "png" };
        let original = decode(&fetched(&format!("samples/{photo}.{ext}")));
        let clean = brisque.score_rgb(&original.data, original.width, original.height);
        let (q_clean, q_noise, q_blur) = (
            quality_from_score(clean),
            quality_from_score(score("noise25")),
            quality_from_score(score("blur3")),
        );
        println!("{photo}: quality clean {q_clean:.3}, noisy {q_noise:.3}, blurred {q_blur:.3}");
        assert!(q_clean > 0.85 && q_noise < q_clean - 0.3 && q_blur < q_clean - 0.5);
    }
}

#[test]
fn load_errors_name_the_file() {
    let (model, range) = model_paths();
    let dir = std::env::temp_dir().join(format!("brisque-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let missing = dir.join("nope.yml");
    let err = Brisque::load(&missing, &range).unwrap_err();
    assert!(
        matches!(err, BrisqueError::Io { ref path, .. } if path == &missing),
        "{err}"
    );
    assert!(err.to_string().contains("nope.yml"), "{err}");

    let broken = dir.join("broken.yml");
    std::fs::write(
        &broken,
        "%YAML:1.0\n---\nrange: !!opencv-matrix\n   rows: 2\n   data: [ 1., 2.,\n",
    )
    .unwrap();
    let err = Brisque::load(&model, &broken).unwrap_err();
    assert!(matches!(err, BrisqueError::Syntax { line: 5, .. }), "{err}");
    assert!(err.to_string().contains("broken.yml:5"), "{err}");

    let swapped = Brisque::load(&range, &model).unwrap_err();
    assert!(
        matches!(swapped, BrisqueError::Missing { ref key, .. } if key == "opencv_ml_svm"),
        "{swapped}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
