//! `darkroom thumbnails` as a user runs it: a folder of real photos (one corrupt)
//! into thumbnails, a resumed re-run, and a model's exact inputs.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use imaging::{DecodeRequest, Limits};
use models::Home;

/// Two good photos (one in a subfolder) and a corrupt one.
fn photos(home: &Home, name: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::copy(home.samples().join("rocket.jpg"), dir.join("rocket.jpg")).unwrap();
    std::fs::create_dir_all(dir.join("cats")).unwrap();
    std::fs::copy(
        home.samples().join("chelsea.png"),
        dir.join("cats/chelsea.png"),
    )
    .unwrap();
    // A Huffman table whose code counts add up to more than 256 codes:
    // libjpeg fails on it, and Pillow too. (Zeroed entropy data would not
    // do: libjpeg only warns about it, and the photo decodes.)
    let mut bad = std::fs::read(home.samples().join("rocket.jpg")).unwrap();
    let dht = bad
        .windows(2)
        .position(|w| w == [0xFF, 0xC4])
        .expect("a DHT segment");
    bad[dht + 5..dht + 21].fill(0xFF);
    std::fs::write(dir.join("broken.jpg"), bad).unwrap();
    dir
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn size_of(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let decoded = imaging::decode(&bytes, &DecodeRequest::default()).unwrap();
    (decoded.image.width, decoded.image.height)
}

/// Every file under `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_folder_becomes_thumbnails_failures_named_and_a_rerun_skips() {
    let home = home();
    let input = photos(&home, "in");
    let output = scratch("out");
    // What a run killed mid-write leaves: the re-run replaces it.
    std::fs::write(output.join(".rocket.jpg.partial"), b"half a thumbn").unwrap();
    let args = [
        "thumbnails",
        "--width",
        "128",
        "--height",
        "96",
        s(&input),
        s(&output),
    ];
    let out = darkroom(&home, &args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(2), "some failed; stderr: {stderr}");
    assert!(
        stderr.contains("broken.jpg") && stderr.contains("(corrupt_image)"),
        "names the file and the code: {stderr}"
    );
    assert!(
        stdout.contains("2 written, 0 skipped (already present), 1 failed"),
        "{stdout}"
    );
    assert_eq!(
        files(&output),
        ["cats/chelsea.jpg", "rocket.jpg"],
        "no partial files"
    );
    assert_eq!(size_of(&output.join("rocket.jpg")), (128, 96));
    assert_eq!(size_of(&output.join("cats/chelsea.jpg")), (128, 96));

    // Resumable: what exists is skipped (the broken photo fails again).
    let out = darkroom(&home, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout.contains("0 written, 2 skipped (already present), 1 failed"),
        "{stdout}"
    );

    // --overwrite redoes them; without the broken photo the run succeeds.
    std::fs::remove_file(input.join("broken.jpg")).unwrap();
    let mut again = args.to_vec();
    again.push("--overwrite");
    let (stdout, _) = darkroom_ok(&home, &again);
    assert!(
        stdout.contains("2 written, 0 skipped (already present), 0 failed"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(input);
    let _ = std::fs::remove_dir_all(output);
}

#[test]
fn a_model_preset_writes_that_models_input_as_png() {
    let home = home();
    let input = photos(&home, "preset-in");
    let output = scratch("preset-out");
    let out = darkroom(
        &home,
        &[
            "thumbnails",
            "--preset",
            "model:efficientnet-lite0",
            "--jobs",
            "1",
            s(&input),
            s(&output),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(files(&output), ["cats/chelsea.png", "rocket.png"]);
    for name in ["cats/chelsea.png", "rocket.png"] {
        let path = output.join(name);
        assert_eq!(size_of(&path), (224, 224), "{name}");
        let bytes = std::fs::read(&path).unwrap();
        let header = imaging::probe(&bytes, &Limits::default()).unwrap();
        assert_eq!(header.format, imaging::Format::Png);
    }
    let _ = std::fs::remove_dir_all(input);
    let _ = std::fs::remove_dir_all(output);
}

#[test]
fn bad_arguments_are_explained() {
    let home = home();
    let output = scratch("args-out");
    let out = darkroom(
        &home,
        &["thumbnails", "--width", "64", "/no/such/folder", s(&output)],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/no/such/folder") && stderr.contains("does not exist"),
        "{stderr}"
    );
    let out = darkroom(&home, &["thumbnails", "/tmp", s(&output)]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap: a size or preset is required"
    );
    let out = darkroom(
        &home,
        &["thumbnails", "--preset", "model:nope", "/tmp", s(&output)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("nope"), "{stderr}");
    let out = darkroom(
        &home,
        &[
            "thumbnails",
            "--width",
            "0",
            "--height",
            "0",
            "/tmp",
            s(&output),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("both 0"), "{stderr}");
    let _ = std::fs::remove_dir_all(output);
}
