//! The analyzer above a fake backend: batch shapes, per-photo ordering,
//! concepts, captions, face boxes mapped to the photo, model releases and
//! output validation, without any real model.

use std::sync::{Arc, Mutex};

use models::analyzer::{AnalyzeOptions, Analyzer, LoadOptions};
use models::testing::{classify, detect, png, repository};
use models::{Backend, FakeBackend, ModelError, Outputs, Tensor};

type Seen = Arc<Mutex<Vec<Vec<usize>>>>;

fn analyzer(seen: Seen) -> Analyzer {
    let repo = repository();
    Analyzer::load_with(&repo, &LoadOptions::default(), &mut |entry| {
        let seen = seen.clone();
        let backend: Box<dyn Backend> = match entry.config.name.as_str() {
            "fake-classifier" => Box::new(FakeBackend(move |t: &Tensor| {
                seen.lock().unwrap().push(t.shape.clone());
                classify(t)
            })),
            _ => Box::new(FakeBackend(detect)),
        };
        Ok(backend)
    })
    .expect("loads with fakes")
}

#[test]
fn one_batch_per_model_and_results_in_photo_order() {
    let seen = Seen::default();
    let analyzer = analyzer(seen.clone());
    let limits = imaging::Limits::default();
    // 400×200: the letterbox pads 32 rows above and below in the 128 input.
    let pngs: Vec<(String, Vec<u8>)> = [("bright", 200u8), ("dark", 20), ("bright2", 230)]
        .iter()
        .map(|(id, level)| (id.to_string(), png(400, 200, *level)))
        .collect();
    let photos: Vec<(String, &[u8])> = pngs.iter().map(|(id, b)| (id.clone(), &b[..])).collect();
    let results: Vec<_> = analyzer
        .infer(
            &photos,
            &limits,
            &AnalyzeOptions {
                embedding: true,
                ..AnalyzeOptions::default()
            },
        )
        .expect("infers")
        .into_iter()
        .map(|r| r.expect("prepares"))
        .collect();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![vec![3, 3, 224, 224]],
        "one batch of three"
    );
    let ids: Vec<&str> = results.iter().map(|r| r.photo_id.as_str()).collect();
    assert_eq!(ids, ["bright", "dark", "bright2"]);

    let bright = &results[0];
    assert_eq!(
        bright.concepts[0].0, "cat",
        "broad concept sums its classes: {:?}",
        bright.concepts
    );
    assert!(bright.concepts.iter().any(|(n, _)| n == "tabby cat"));
    assert_eq!(bright.captions[0].caption, "A TABBY CAT");
    assert_eq!(bright.size, [400, 200]);
    assert_eq!(bright.faces.len(), 1);
    // Anchor 100 is cell 50 = (x 2, y 3) of the 16×16 grid: centre (20, 28) in the
    // 128 input, box x 4..36, y 12..44; back to the photo: ×3.125 after removing
    // the 32-row letterbox pad, y clamped at the top edge.
    let b = bright.faces[0].bbox;
    assert_eq!(b, [13, 0, 113, 38], "box in original pixels");
    assert!(bright.model_release_required);
    let embedding = bright.embedding.as_ref().expect("asked for");
    assert_eq!(embedding.0, vec![0.6, 0.8], "the features, L2-normalised");

    let dark = &results[1];
    assert_eq!(dark.concepts[0].0, "drink");
    assert!(dark.faces.is_empty() && !dark.model_release_required);
}

#[test]
fn release_threshold_is_a_request_option() {
    let analyzer = analyzer(Seen::default());
    let photo = png(64, 64, 200);
    let opts = AnalyzeOptions {
        release_threshold: Some(0.95),
        ..AnalyzeOptions::default()
    };
    let limits = imaging::Limits::default();
    let results = analyzer
        .infer(&[("x".into(), &photo[..])], &limits, &opts)
        .unwrap();
    let r = results[0].as_ref().unwrap();
    assert_eq!(r.faces.len(), 1);
    assert!(!r.model_release_required, "a 0.88 face is below 0.95");
}

#[test]
fn a_backend_returning_the_wrong_batch_is_a_typed_error() {
    let repo = repository();
    let analyzer = Analyzer::load_with(&repo, &LoadOptions::default(), &mut |_| {
        Ok(Box::new(FakeBackend(|_: &Tensor| {
            Ok(Outputs::from([(
                "logits".to_string(),
                Tensor::new(vec![1, 4], vec![0.0; 4]),
            )]))
        })) as Box<dyn Backend>)
    })
    .unwrap();
    let limits = imaging::Limits::default();
    let photo = png(32, 32, 100);
    let photos: Vec<(String, &[u8])> = (0..2).map(|i| (i.to_string(), &photo[..])).collect();
    match analyzer.infer(&photos, &limits, &AnalyzeOptions::default()) {
        Err(e @ ModelError::BadOutput { .. }) => assert_eq!(e.code(), "inference_failed"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a short batch must not pass"),
    }
}
