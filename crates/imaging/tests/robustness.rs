//! Hostile and damaged input: typed errors for truncated, foreign and oversized files,
//! and no panic on any prefix or corruption of real photos.

mod common;

use std::path::{Path, PathBuf};

use imaging::{check_complete, decode, probe, DecodeRequest, ImagingError, Limits};

/// A photo from `darkroom models fetch`, by its path in the Darkroom home.
fn home_file(rel: &str) -> Vec<u8> {
    common::read_fetched(&common::home().join(rel))
}

fn fixture(rel: &str) -> Vec<u8> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity/inputs")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// Relative to the Darkroom home.
const ROCKET: &str = "samples/rocket.jpg";
const CHELSEA: &str = "samples/chelsea.png";
const CAMERA: &str = "samples/camera.png";
const PROGRESSIVE: &str = "photos/camera/GreenMeadow.jpg";

#[test]
fn truncated_jpeg_is_truncated() {
    for rel in [ROCKET, PROGRESSIVE] {
        let bytes = home_file(rel);
        for cut in [bytes.len() / 2, bytes.len() - 2] {
            let err = decode(&bytes[..cut], &DecodeRequest::default()).unwrap_err();
            assert!(
                matches!(err, ImagingError::Truncated { .. }),
                "{rel} cut at {cut}: {err:?}"
            );
            assert_eq!(err.code(), "truncated_image");
        }
        // The header alone is still readable.
        assert!(probe(&bytes[..bytes.len() / 2], &Limits::default()).is_ok());
    }
}

#[test]
fn truncated_png_is_truncated() {
    let bytes = home_file(CHELSEA);
    let err = decode(&bytes[..bytes.len() / 2], &DecodeRequest::default()).unwrap_err();
    assert!(matches!(err, ImagingError::Truncated { .. }), "{err:?}");
}

#[test]
fn non_image_bytes_are_unsupported() {
    for bytes in [
        &b"this is a text file, not a photo"[..],
        b"",
        b"GIF89a\x01\x00\x01\x00",
    ] {
        let err = decode(bytes, &DecodeRequest::default()).unwrap_err();
        assert!(
            matches!(err, ImagingError::UnsupportedFormat { .. }),
            "{err:?}"
        );
        assert_eq!(err.code(), "unsupported_format");
    }
}

/// A real PNG (valid CRCs, a start of compressed data) whose header claims 50000×50000.
fn huge_png() -> Vec<u8> {
    let mut png = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new(&mut png);
    image::ImageEncoder::write_image(encoder, &[0u8; 3 * 4], 2, 2, image::ExtendedColorType::Rgb8)
        .unwrap();
    // Patch IHDR's width and height, then its CRC.
    png[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn png_claiming_50000_square_is_refused_before_decoding() {
    let png = huge_png();
    for result in [
        probe(&png, &Limits::default()).map(|_| ()),
        decode(&png, &DecodeRequest::default()).map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                ImagingError::TooManyPixels {
                    width: 50_000,
                    height: 50_000,
                    limit: 100_000_000
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.code(), "too_many_pixels");
    }
}

#[test]
fn byte_limit_is_enforced() {
    let bytes = home_file(ROCKET);
    let req = DecodeRequest {
        limits: Limits {
            max_bytes: 1000,
            ..Limits::default()
        },
        min_size: None,
    };
    let err = decode(&bytes, &req).unwrap_err();
    assert!(matches!(
        err,
        ImagingError::TooManyBytes { limit: 1000, .. }
    ));
    assert_eq!(err.code(), "image_too_large");
}

/// Cut points: every length up to 64 bytes (the headers), then 40 spread over the rest.
fn cuts(len: usize) -> impl Iterator<Item = usize> {
    (0..64.min(len))
        .chain((1..40).map(move |i| i * len / 40))
        .chain([len - 1])
}

fn assert_no_panic_and_typed(name: &str, bytes: &[u8]) {
    for req in [
        DecodeRequest::default(),
        DecodeRequest {
            min_size: Some((32, 32)),
            ..DecodeRequest::default()
        },
    ] {
        if let Err(err) = decode(bytes, &req) {
            assert!(
                err.is_client_error(),
                "{name}: input fault reported as internal: {err:?}"
            );
        }
    }
}

#[test]
fn no_panic_on_any_prefix_of_real_files() {
    let files = [
        (ROCKET, home_file(ROCKET)),
        (PROGRESSIVE, home_file(PROGRESSIVE)),
        (CHELSEA, home_file(CHELSEA)),
        (CAMERA, home_file(CAMERA)),
        ("chelsea.q90.webp", fixture("chelsea.q90.webp")),
        ("chelsea.cmyk.jpg", fixture("chelsea.cmyk.jpg")),
        ("chelsea.orient5.png", fixture("chelsea.orient5.png")),
        ("rocket.orient6.jpg", fixture("rocket.orient6.jpg")),
    ];
    for (name, bytes) in &files {
        for cut in cuts(bytes.len()) {
            let prefix = &bytes[..cut];
            let _ = probe(prefix, &Limits::default());
            assert_no_panic_and_typed(&format!("{name}[..{cut}]"), prefix);
        }
    }
}

#[test]
fn no_panic_on_corrupted_real_files() {
    // Deterministic xorshift so a failure reproduces.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (name, original) in [
        (ROCKET, home_file(ROCKET)),
        (CHELSEA, home_file(CHELSEA)),
        ("chelsea.q90.webp", fixture("chelsea.q90.webp")),
    ] {
        for round in 0..24 {
            let mut bytes = original.clone();
            // Early rounds hit the headers, later ones anywhere.
            let span = if round < 12 {
                600.min(bytes.len())
            } else {
                bytes.len()
            };
            for _ in 0..(1 + round % 4) {
                let at = (next() as usize) % span;
                bytes[at] ^= (next() as u8) | 1;
            }
            assert_no_panic_and_typed(&format!("{name} round {round}"), &bytes);
        }
    }
}

/// Every real photo the tests have (camera JPEGs with EXIF thumbnails,
/// progressive JPEGs, scikit-image PNGs, the synthetic fixtures) is whole,
/// and each cut short is not: the upload check refuses only what is broken.
#[test]
fn every_real_photo_is_whole_and_every_prefix_is_not() {
    let home = common::home();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/inputs");
    let mut checked = 0;
    for dir in [home.join("samples"), home.join("photos/camera"), fixtures] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                matches!(
                    ext.to_ascii_lowercase().as_str(),
                    "jpg" | "jpeg" | "png" | "webp"
                )
            })
            .collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap();
            if decode(&bytes, &DecodeRequest::default()).is_err() {
                continue; // a fixture that is meant to fail
            }
            check_complete(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let cut = &bytes[..bytes.len() * 2 / 3];
            assert_eq!(
                check_complete(cut).map_err(|e| e.code()),
                Err("truncated_image"),
                "{} cut at two thirds",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} photos checked");
}
