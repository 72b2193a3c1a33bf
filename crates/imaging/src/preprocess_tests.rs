//! Unit tests for the preprocessing geometry, serde shape and tensor layout.

use super::*;

fn effnet() -> PreprocessSpec {
    PreprocessSpec {
        width: 224,
        height: 224,
        resize: ResizeMode::ShortSideCrop { short_side: 256 },
        filter: Filter::Bicubic,
        normalize: Normalize::MeanStd {
            mean: [127.0; 3],
            std: [128.0; 3],
        },
        layout: Layout::Nchw,
        decode: DecodeMode::Exact,
    }
}

fn blazeface() -> PreprocessSpec {
    PreprocessSpec {
        width: 128,
        height: 128,
        resize: ResizeMode::Letterbox { pad: [0, 0, 0] },
        filter: Filter::Bilinear,
        normalize: Normalize::ScaleOffset {
            scale: 1.0 / 127.5,
            offset: -1.0,
        },
        layout: Layout::Nhwc,
        decode: DecodeMode::Fast,
    }
}

#[test]
fn toml_reads_well_and_round_trips() {
    let text = r#"
        width = 224
        height = 224
        filter = "bicubic"
        layout = "nchw"
        resize = { mode = "short_side_crop", short_side = 256 }
        normalize = { kind = "mean_std", mean = [127.0, 127.0, 127.0], std = [128.0, 128.0, 128.0] }
    "#;
    let spec: PreprocessSpec = toml::from_str(text).unwrap();
    assert_eq!(spec, effnet(), "decode defaults to exact");
    for spec in [effnet(), blazeface()] {
        let text = toml::to_string(&spec).unwrap();
        assert_eq!(
            toml::from_str::<PreprocessSpec>(&text).unwrap(),
            spec,
            "{text}"
        );
    }
    let stretch: ResizeMode = toml::from_str(r#"mode = "stretch""#).unwrap();
    assert_eq!(stretch, ResizeMode::Stretch);
    let typo = text.replace("short_side =", "shortside =");
    assert!(toml::from_str::<PreprocessSpec>(&typo).is_err());
}

#[test]
fn validate_catches_config_mistakes() {
    assert!(effnet().validate().is_ok());
    let mut bad = effnet();
    bad.normalize = Normalize::MeanStd {
        mean: [0.0; 3],
        std: [1.0, 0.0, 1.0],
    };
    assert!(bad.validate().is_err());
    let mut bad = effnet();
    bad.resize = ResizeMode::ShortSideCrop { short_side: 0 };
    assert!(bad.validate().is_err());
}

#[test]
fn python_rounding_of_long_sides() {
    // round(x) for x = num / den: halves go to the even neighbour.
    assert_eq!(div_round_half_even(117, 2), 58); // 58.5
    assert_eq!(div_round_half_even(119, 2), 60); // 59.5
    assert_eq!(div_round_half_even(1, 2), 0); // 0.5
    assert_eq!(div_round_half_even(3, 2), 2); // 1.5
    assert_eq!(div_round_half_even(7, 3), 2); // 2.33
    assert_eq!(div_round_half_even(8, 3), 3); // 2.67
    assert_eq!(div_round_half_even(12, 4), 3);
}

#[test]
fn short_side_sizes_round_half_to_even() {
    assert_eq!(short_side_size(451, 300, 256), (385, 256)); // round(384.85)
    assert_eq!(short_side_size(300, 451, 256), (256, 385));
    assert_eq!(short_side_size(640, 427, 256), (384, 256)); // round(383.70)
    assert_eq!(short_side_size(741, 500, 256), (379, 256)); // round(379.39)
    assert_eq!(short_side_size(1680, 1050, 256), (410, 256)); // round(409.6)
    assert_eq!(short_side_size(512, 512, 256), (256, 256));
    assert_eq!(short_side_size(3, 2, 255), (382, 255)); // round(382.5)
    assert_eq!(short_side_size(3, 2, 257), (386, 257)); // round(385.5)
    assert_eq!(short_side_size(1, 100_000, 256), (256, 25_600_000));
}

#[test]
fn crop_offsets_are_floored() {
    // 451×300 → 385×256: x offset (385 - 224) // 2 = 80, y (256 - 224) // 2 = 16.
    let plan = effnet().plan(451, 300);
    assert_eq!(plan.resized, (385, 256));
    assert_eq!(plan.keep, (80, 16));
    // (410 - 224) // 2 = 93; (411 - 224) // 2 = 93 (round would say 94).
    assert_eq!(crop_axis(410, 224), (93, 0, 224));
    assert_eq!(crop_axis(411, 224), (93, 0, 224));
    assert_eq!(crop_axis(413, 224), (94, 0, 224));
    // Crop larger than the axis: floor((201 - 224) / 2) = -12, so 12 black before.
    assert_eq!(crop_axis(201, 224), (0, 12, 201));
    assert_eq!(crop_axis(200, 224), (0, 12, 200));
}

#[test]
fn letterbox_fit_sizes() {
    assert_eq!(fit_size(640, 427, 128, 128), (128, 85)); // 85.4
    assert_eq!(fit_size(427, 640, 128, 128), (85, 128));
    assert_eq!(fit_size(512, 512, 128, 128), (128, 128));
    assert_eq!(fit_size(100_000, 1, 128, 128), (128, 1));
}

#[test]
fn transform_maps_crop_back_to_source() {
    let t = effnet().plan(512, 512).transform(512, 512);
    // 512 → 256 (×0.5), crop offset 16 → source offset 32.
    assert_eq!(t.to_source(0.0, 0.0), (32.0, 32.0));
    assert_eq!(t.to_source(224.0, 224.0), (480.0, 480.0));
    let (x, y) = t.to_model(256.0, 256.0);
    assert!((x - 112.0).abs() < 1e-4 && (y - 112.0).abs() < 1e-4);

    let t = blazeface().plan(640, 427).transform(640, 427);
    // 640×427 → 128×85 placed at y = 21.
    let (x, y) = t.to_source(0.0, 21.0);
    assert!(x.abs() < 1e-4 && y.abs() < 1e-4);
    let (x, y) = t.to_source(128.0, 106.0);
    assert!((x - 640.0).abs() < 1e-3 && (y - 427.0).abs() < 1e-3);
    let t2 = t.then_scale(2.0, 2.0);
    assert_eq!(
        t2.to_source(128.0, 106.0).0,
        2.0 * t.to_source(128.0, 106.0).0
    );
}

#[test]
fn crop_larger_than_resized_is_padded_with_black() {
    let mut spec = effnet();
    spec.resize = ResizeMode::ShortSideCrop { short_side: 200 };
    // 300×200 → 300×200 (short side already 200); crop 224×224: pad 12 rows on top.
    let img = RgbImage::filled(300, 200, [200, 100, 50]);
    let out = spec.resize(&img).image;
    assert_eq!(out.pixel(100, 11), [0, 0, 0]);
    assert_eq!(out.pixel(100, 12), [200, 100, 50]);
    assert_eq!(out.pixel(100, 211), [200, 100, 50]);
    assert_eq!(out.pixel(100, 212), [0, 0, 0]);
}

#[test]
fn letterbox_pads_both_sides() {
    let mut spec = blazeface();
    spec.resize = ResizeMode::Letterbox { pad: [1, 2, 3] };
    let img = RgbImage::filled(640, 427, [200, 100, 50]);
    let out = spec.resize(&img).image;
    assert_eq!(out.pixel(64, 20), [1, 2, 3]);
    assert_eq!(out.pixel(64, 21), [200, 100, 50]);
    assert_eq!(out.pixel(64, 105), [200, 100, 50]);
    assert_eq!(out.pixel(64, 106), [1, 2, 3]);
}

#[test]
fn fast_decode_asks_for_twice_the_intermediate() {
    assert_eq!(effnet().decode_min_size(4000, 3000), None);
    let mut fast = effnet();
    fast.decode = DecodeMode::Fast;
    assert_eq!(fast.decode_min_size(4000, 3000), Some((682, 512)));
    assert_eq!(blazeface().decode_min_size(4000, 3000), Some((256, 192)));
}

#[test]
fn tensor_layouts() {
    let mut spec = effnet();
    spec.width = 2;
    spec.height = 1;
    spec.normalize = Normalize::ScaleOffset {
        scale: 1.0,
        offset: 0.0,
    };
    let img = RgbImage {
        width: 2,
        height: 1,
        data: vec![1, 2, 3, 4, 5, 6],
    };
    let mut out = vec![0.0; spec.tensor_len()];
    spec.write_tensor(&img, &mut out);
    assert_eq!(out, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    spec.layout = Layout::Nhwc;
    spec.normalize = Normalize::MeanStd {
        mean: [1.0, 2.0, 3.0],
        std: [2.0, 2.0, 2.0],
    };
    spec.write_tensor(&img, &mut out);
    assert_eq!(out, vec![0.0, 0.0, 0.0, 1.5, 1.5, 1.5]);
}

#[test]
fn identity_resize_copies() {
    let mut spec = effnet();
    spec.resize = ResizeMode::Stretch;
    spec.width = 3;
    spec.height = 2;
    let img = RgbImage {
        width: 3,
        height: 2,
        data: (0..18).collect(),
    };
    let r = spec.resize(&img);
    assert_eq!(r.image, img);
    assert_eq!(r.transform.to_source(3.0, 2.0), (3.0, 2.0));
}

#[test]
fn every_filter_handles_tiny_and_extreme_sources() {
    for filter in [
        Filter::Nearest,
        Filter::Bilinear,
        Filter::Bicubic,
        Filter::Lanczos3,
    ] {
        for (w, h) in [(1, 1), (1, 1000), (1000, 1), (3, 2)] {
            for resize in [
                ResizeMode::ShortSideCrop { short_side: 256 },
                ResizeMode::Letterbox { pad: [9, 9, 9] },
                ResizeMode::Stretch,
            ] {
                let spec = PreprocessSpec {
                    filter,
                    resize,
                    ..effnet()
                };
                let out = spec.resize(&RgbImage::filled(w, h, [10, 20, 30])).image;
                assert!(out.is_consistent());
                assert_eq!((out.width, out.height), (224, 224));
            }
        }
    }
}
