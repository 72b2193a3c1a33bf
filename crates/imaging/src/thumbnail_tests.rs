//! Unit tests of thumbnail planning and encoding (kept beside the module).
use super::*;

fn spec(width: u32, height: u32, fit: Fit) -> ThumbnailSpec {
    ThumbnailSpec {
        fit,
        ..ThumbnailSpec::new(width, height)
    }
}

fn out(spec: &ThumbnailSpec, ow: u32, oh: u32) -> (u32, u32) {
    let p = plan(spec, ow, oh, u64::MAX).unwrap();
    (p.window.width, p.window.height)
}

#[test]
fn cover_crops_the_centre_of_a_resize_covering_the_box() {
    let p = plan(&spec(256, 256, Fit::Cover), 4000, 3000, u64::MAX).unwrap();
    // 256 · 4000 / 3000 = 341.33.
    assert_eq!(p.resized, (341, 256));
    assert_eq!(
        p.window,
        Rect {
            x: 42,
            y: 0,
            width: 256,
            height: 256
        }
    );
    let p = plan(&spec(100, 50, Fit::Cover), 300, 600, u64::MAX).unwrap();
    assert_eq!(p.resized, (100, 200));
    assert_eq!((p.window.x, p.window.y), (0, 75));
}

#[test]
fn contain_and_fill() {
    assert_eq!(out(&spec(256, 256, Fit::Contain), 4000, 3000), (256, 192));
    assert_eq!(out(&spec(256, 256, Fit::Contain), 3000, 4000), (192, 256));
    assert_eq!(out(&spec(300, 100, Fit::Fill), 4000, 3000), (300, 100));
}

#[test]
fn one_side_is_derived_from_the_aspect() {
    assert_eq!(out(&spec(256, 0, Fit::Cover), 4000, 3000), (256, 192));
    assert_eq!(out(&spec(0, 300, Fit::Contain), 4000, 3000), (400, 300));
    // Never below one pixel.
    assert_eq!(out(&spec(10, 0, Fit::Fill), 100_000, 1), (10, 1));
}

#[test]
fn without_enlarge_the_box_shrinks_to_the_photo() {
    assert_eq!(out(&spec(256, 256, Fit::Cover), 200, 100), (100, 100));
    assert_eq!(out(&spec(256, 256, Fit::Contain), 200, 100), (200, 100));
    assert_eq!(out(&spec(256, 128, Fit::Fill), 200, 150), (200, 100));
    assert_eq!(out(&spec(512, 0, Fit::Cover), 200, 100), (200, 100));
    // Only one axis would upscale: the box still keeps its aspect.
    assert_eq!(out(&spec(100, 400, Fit::Cover), 1000, 300), (75, 300));
    let p = plan(&spec(256, 256, Fit::Cover), 200, 100, u64::MAX).unwrap();
    assert_eq!(p.resized, (200, 100), "no resampling at all");
    let up = ThumbnailSpec {
        enlarge: true,
        ..spec(256, 256, Fit::Cover)
    };
    assert_eq!(out(&up, 200, 100), (256, 256));
}

#[test]
fn derived_sides_are_checked_against_the_limit() {
    let tall = ThumbnailSpec {
        enlarge: true,
        format: OutputFormat::Png,
        ..spec(10_000, 0, Fit::Cover)
    };
    let err = plan(&tall, 10, 100_000, 100_000_000).unwrap_err();
    assert_eq!(err.code(), "output_too_large", "{err}");
    let err = plan(&spec(0, 20_000, Fit::Cover), 100_000, 1_000, u64::MAX);
    assert_eq!(err.unwrap_err().code(), "invalid_thumbnail", "JPEG sides");
}

#[test]
fn validate_refuses_with_codes() {
    let code = |s: ThumbnailSpec, max| s.validate(max).unwrap_err().code();
    assert_eq!(code(spec(0, 0, Fit::Cover), 1 << 20), "invalid_thumbnail");
    let q0 = ThumbnailSpec {
        quality: 0,
        ..ThumbnailSpec::new(10, 10)
    };
    assert_eq!(code(q0, 1 << 20), "invalid_thumbnail");
    let q101 = ThumbnailSpec {
        quality: 101,
        ..ThumbnailSpec::new(10, 10)
    };
    assert_eq!(code(q101, 1 << 20), "invalid_thumbnail");
    assert_eq!(
        code(ThumbnailSpec::new(2000, 2000), 1 << 20),
        "output_too_large"
    );
    assert_eq!(code(ThumbnailSpec::new(2000, 0), 1000), "output_too_large");
    let webp = ThumbnailSpec {
        format: OutputFormat::Webp,
        ..ThumbnailSpec::new(20_000, 1)
    };
    assert_eq!(code(webp, u64::MAX), "invalid_thumbnail");
    ThumbnailSpec::new(256, 0).validate(1 << 20).unwrap();
}

#[test]
fn cache_keys_are_canonical_and_filename_safe() {
    assert_eq!(
        ThumbnailSpec::new(256, 256).cache_key(),
        "w256-h256-cover-lanczos3-q85.jpg"
    );
    let png = ThumbnailSpec {
        format: OutputFormat::Png,
        fit: Fit::Contain,
        filter: Filter::Bicubic,
        enlarge: true,
        quality: 40,
        ..ThumbnailSpec::new(0, 128)
    };
    assert_eq!(png.cache_key(), "w0-h128-contain-bicubic-enlarge.png");
    let key = png.cache_key();
    assert!(key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
}

#[test]
fn json_shape_and_defaults() {
    let s: ThumbnailSpec = serde_json::from_str(r#"{"width": 256}"#).unwrap();
    assert_eq!(s, ThumbnailSpec::new(256, 0));
    let s: ThumbnailSpec = serde_json::from_str(
        r#"{"width": 64, "height": 32, "fit": "fill", "filter": "nearest",
            "format": "webp", "quality": 50, "enlarge": true}"#,
    )
    .unwrap();
    assert_eq!(
        (s.fit, s.filter, s.format, s.quality, s.enlarge),
        (Fit::Fill, Filter::Nearest, OutputFormat::Webp, 50, true)
    );
    let back: ThumbnailSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert!(serde_json::from_str::<ThumbnailSpec>(r#"{"width": 1, "crop": 1}"#).is_err());
}

#[test]
fn formats_parse_from_names_extensions_and_mime_types() {
    for f in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp] {
        assert_eq!(OutputFormat::parse(f.extension()), Some(f));
        assert_eq!(OutputFormat::parse(f.content_type()), Some(f));
    }
    assert_eq!(OutputFormat::parse("JPEG"), Some(OutputFormat::Jpeg));
    assert_eq!(OutputFormat::parse("gif"), None);
}

#[test]
fn encode_refuses_what_it_cannot_write() {
    let img = RgbImage::filled(4, 4, [1, 2, 3]);
    let err = encode(&img, OutputFormat::Jpeg, 0).unwrap_err();
    assert_eq!(err.code(), "invalid_thumbnail");
    encode(&img, OutputFormat::Png, 0).expect("quality is JPEG's only");
    let empty = RgbImage::filled(0, 4, [0, 0, 0]);
    assert!(encode(&empty, OutputFormat::Png, 85).is_err());
}
