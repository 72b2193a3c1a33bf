//! The `darkroom` binary as a user runs it, on the real model repository and
//! the real sample photos.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[test]
fn analyzes_the_sample_folder_one_json_line_per_photo() {
    let home = home();
    let samples = home.samples();
    let out = darkroom(&home, &["analyze", samples.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = lines(&out);
    assert_eq!(results.len(), 7, "one line per sample photo");
    for r in &results {
        for key in [
            "photoId",
            "concepts",
            "confidence",
            "quality",
            "faces",
            "modelReleaseRequired",
            "captions",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        assert!(r.get("embedding").is_none(), "embedding only when asked");
        let concepts = r["concepts"].as_array().unwrap();
        assert!(concepts.len() <= 10);
        for pair in concepts {
            assert!(
                pair[0].is_string() && pair[1].is_number(),
                "[name, confidence] pairs: {pair}"
            );
        }
    }
    let astronaut = results
        .iter()
        .find(|r| r["photoId"].as_str().unwrap().ends_with("astronaut.png"))
        .unwrap();
    assert_eq!(astronaut["modelReleaseRequired"], true);
}

#[test]
fn a_bad_photo_is_named_and_the_others_still_analyzed() {
    let home = home();
    let dir = scratch("bad");
    let good = dir.join("good.jpg");
    std::fs::copy(home.samples().join("rocket.jpg"), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(dir.join("truncated.jpg"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(dir.join("notes.png"), b"this is not an image").unwrap();
    let out = darkroom(
        &home,
        &[
            "analyze",
            "--top-k",
            "3",
            "--embedding",
            dir.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code says some failed; stderr: {stderr}"
    );
    assert!(stderr.contains("notes.png"), "names the bad file: {stderr}");
    let results = lines(&out);
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["photoId"].as_str().unwrap())
        .collect();
    assert!(ids.iter().any(|id| id.ends_with("good.jpg")), "{ids:?}");
    assert!(!ids.iter().any(|id| id.ends_with("notes.png")));
    for r in &results {
        assert!(r["concepts"].as_array().unwrap().len() <= 3);
        assert!(r["embedding"].is_string());
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression (issue 17): `.mpo` files were skipped by the folder walk. A
/// multi-picture file is its primary JPEG with the others after it; the
/// primary is analysed.
#[test]
fn an_mpo_in_a_folder_is_analysed_by_its_primary_image() {
    let home = home();
    let dir = scratch("mpo");
    let primary = std::fs::read(home.samples().join("rocket.jpg")).unwrap();
    let mut mpo = primary.clone();
    mpo.extend(std::fs::read(home.camera_photos().join("Aqua.jpg")).unwrap());
    std::fs::write(dir.join("pair.MPO"), &mpo).unwrap();
    std::fs::write(dir.join("rocket.jpg"), &primary).unwrap();
    let out = darkroom(&home, &["analyze", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = lines(&out);
    assert_eq!(results.len(), 2, "both files walked: {results:?}");
    let strip = |mut r: serde_json::Value| {
        r.as_object_mut().unwrap().remove("photoId");
        r
    };
    let (mpo, jpg) = (strip(results[0].clone()), strip(results[1].clone()));
    assert_eq!(mpo, jpg, "the primary image, not the one after it");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_path_is_an_error_naming_it() {
    let home = home();
    let out = darkroom(&home, &["analyze", "/no/such/photo.jpg"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/photo.jpg"));
}

#[test]
fn models_list_and_verify() {
    let home = home();
    let list = darkroom(&home, &["models", "list"]);
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    for name in [
        "efficientnet-lite0",
        "blazeface-short-range",
        "brisque",
        "template-captioner",
    ] {
        assert!(text.contains(name), "{name} listed: {text}");
    }
    let verify = darkroom(&home, &["models", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn a_second_fetch_does_no_work() {
    let home = home();
    let out = darkroom(&home, &["models", "fetch"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("0 built"), "{stderr}");
    assert!(!stderr.contains("downloading"), "{stderr}");
}

#[test]
fn a_tampered_model_file_fails_verification() {
    let home = home();
    // Work on a copy of the home so the real one stays intact.
    let copy = scratch("tamper");
    copy_dir(&home.models().join("brisque"), &copy.join("models/brisque"));
    let range = copy.join("models/brisque/brisque_range_live.yml");
    let mut text = std::fs::read(&range).unwrap();
    text.extend_from_slice(b"\n# tampered\n");
    std::fs::write(&range, text).unwrap();
    let err =
        modelzoo::fetch::verify_dir(&copy.join("models/brisque")).expect_err("tampering is caught");
    assert!(err.to_string().contains("brisque_range_live.yml"), "{err}");
    let _ = std::fs::remove_dir_all(copy);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}
