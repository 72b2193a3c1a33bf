//! Thumbnails of real photos: sizes and fits, EXIF orientation, every output format
//! read back, fidelity of shrink-on-load against a full decode, and model inputs
//! equal to what inference is given.

mod common;

use std::path::PathBuf;

use imaging::{
    decode, decode_to_fit, render, render_model_input, DecodeMode, DecodeRequest, Filter, Fit,
    Limits, OutputFormat, PreprocessSpec, RgbImage, Thumbnail, ThumbnailSpec,
};

fn camera_photos() -> Vec<PathBuf> {
    let dir = common::home().join("photos/camera");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} ({e}): run `darkroom models fetch`", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    photos.sort();
    assert!(photos.len() >= 10, "camera photos in {}", dir.display());
    photos
}

fn read(rel: &str) -> Vec<u8> {
    common::read_fetched(&common::home().join(rel))
}

fn fixture(name: &str) -> Vec<u8> {
    let path = common::workspace().join("crates/imaging/tests/fixtures/parity/inputs");
    common::read_fetched(&path.join(name))
}

fn spec(width: u32, height: u32, fit: Fit) -> ThumbnailSpec {
    ThumbnailSpec {
        fit,
        ..ThumbnailSpec::new(width, height)
    }
}

/// The thumbnail read back by the `image` crate, checked against its stated size.
fn read_back(t: &Thumbnail) -> RgbImage {
    let format = match t.format {
        OutputFormat::Jpeg => image::ImageFormat::Jpeg,
        OutputFormat::Png => image::ImageFormat::Png,
        OutputFormat::Webp => image::ImageFormat::WebP,
    };
    assert_eq!(image::guess_format(&t.bytes).unwrap(), format);
    let img = image::load_from_memory_with_format(&t.bytes, format)
        .unwrap_or_else(|e| panic!("{:?} does not decode: {e}", t.format));
    assert!(
        matches!(img, image::DynamicImage::ImageRgb8(_)),
        "8-bit RGB: {:?}",
        img.color()
    );
    let rgb = img.into_rgb8();
    assert_eq!(
        (rgb.width(), rgb.height()),
        (t.width, t.height),
        "stated size"
    );
    RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        data: rgb.into_raw(),
    }
}

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let se: f64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let mse = se / a.data.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

#[test]
fn sizes_and_fits() {
    // Dune: a landscape camera photo.
    let bytes = read("photos/camera/Dune.jpg");
    let (ow, oh) = imaging::probe(&bytes, &Limits::default())
        .unwrap()
        .oriented_size();
    assert!(ow > oh && ow > 1000, "{ow}x{oh}");
    let size = |s: ThumbnailSpec| {
        let t = render(&bytes, &Limits::default(), &s).unwrap();
        (t.width, t.height)
    };
    assert_eq!(size(spec(256, 256, Fit::Cover)), (256, 256));
    assert_eq!(size(spec(300, 120, Fit::Cover)), (300, 120));
    assert_eq!(size(spec(120, 300, Fit::Cover)), (120, 300));
    assert_eq!(size(spec(300, 100, Fit::Fill)), (300, 100));
    let (w, h) = size(spec(256, 256, Fit::Contain));
    assert_eq!(w, 256, "the long side binds");
    let expected = 256.0 * f64::from(oh) / f64::from(ow);
    assert!((f64::from(h) - expected).abs() <= 1.0, "{h} vs {expected}");
    let (w, h) = size(ThumbnailSpec::new(256, 0));
    assert_eq!(w, 256);
    assert!(
        (f64::from(h) - expected).abs() <= 1.0,
        "derived {h} vs {expected}"
    );
    let (w, h) = size(ThumbnailSpec::new(0, 100));
    assert_eq!(h, 100);
    let expected = 100.0 * f64::from(ow) / f64::from(oh);
    assert!(
        (f64::from(w) - expected).abs() <= 1.0,
        "derived {w} vs {expected}"
    );

    // No enlargement by default: the box shrinks to the photo, keeping its aspect.
    assert_eq!(size(spec(5_000, 5_000, Fit::Contain)), (ow, oh));
    assert_eq!(size(spec(5_000, 5_000, Fit::Cover)), (oh, oh));
    assert_eq!(size(spec(5_000, 2_500, Fit::Fill)), (ow, ow / 2));
    assert_eq!(size(ThumbnailSpec::new(5_000, 0)), (ow, oh));
    // Unless asked for.
    let chelsea = read("samples/chelsea.png"); // 451×300
    let up = ThumbnailSpec {
        enlarge: true,
        format: OutputFormat::Png,
        ..spec(902, 902, Fit::Contain)
    };
    let t = render(&chelsea, &Limits::default(), &up).unwrap();
    assert_eq!((t.width, t.height), (902, 600));
}

#[test]
fn invalid_specs_are_refused_with_codes() {
    let bytes = read("samples/chelsea.png");
    let limits = Limits::default();
    let code = |s: ThumbnailSpec| render(&bytes, &limits, &s).unwrap_err().code();
    assert_eq!(code(ThumbnailSpec::new(0, 0)), "invalid_thumbnail");
    let q0 = ThumbnailSpec {
        quality: 0,
        ..ThumbnailSpec::new(64, 64)
    };
    assert_eq!(code(q0), "invalid_thumbnail");
    assert_eq!(code(ThumbnailSpec::new(20_000, 20_000)), "output_too_large");
    // A derived side is checked once the photo's aspect is known.
    let tall = ThumbnailSpec {
        enlarge: true,
        format: OutputFormat::Png,
        ..ThumbnailSpec::new(0, 60_000)
    };
    let err = render(&bytes, &limits, &tall).unwrap_err();
    assert_eq!(err.code(), "output_too_large", "{err}");
    // The server's own cap is the caller's to pass.
    let err = ThumbnailSpec::new(2048, 2048)
        .validate(1 << 20)
        .unwrap_err();
    assert_eq!(err.code(), "output_too_large");
    // Bad input keeps its decode code.
    let err = render(b"not a photo", &limits, &ThumbnailSpec::new(64, 64)).unwrap_err();
    assert_eq!(err.code(), "unsupported_format");
}

/// The TIFF block of an EXIF APP1 segment holding only an orientation tag.
fn exif_orientation(o: u16) -> Vec<u8> {
    let mut t = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    t.extend_from_slice(&1u16.to_be_bytes()); // one entry
    t.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    t.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    t.extend_from_slice(&1u32.to_be_bytes()); // count
    t.extend_from_slice(&o.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // value padding, no next IFD
    t
}

/// A 64×32 JPEG, left half red and right half blue, tagged with `orientation`.
fn red_blue_jpeg(orientation: u16) -> Vec<u8> {
    let (w, h) = (64u32, 32u32);
    let data = (0..w * h)
        .flat_map(|i| {
            if i % w < w / 2 {
                [255, 0, 0]
            } else {
                [0, 0, 255]
            }
        })
        .collect();
    let img = RgbImage {
        width: w,
        height: h,
        data,
    };
    let jpeg = imaging::encode(&img, OutputFormat::Jpeg, 95).unwrap();
    let app1 = exif_orientation(orientation);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_6_comes_out_upright() {
    // Orientation 6 turns the stored 64×32 clockwise: 32×64 with red on top.
    for format in [OutputFormat::Png, OutputFormat::Jpeg] {
        let s = ThumbnailSpec {
            format,
            ..spec(16, 32, Fit::Contain)
        };
        let t = render(&red_blue_jpeg(6), &Limits::default(), &s).unwrap();
        let img = read_back(&t);
        assert_eq!((img.width, img.height), (16, 32));
        let top = img.pixel(8, 4);
        let bottom = img.pixel(8, 27);
        assert!(top[0] > 200 && top[2] < 60, "{format:?} top {top:?}");
        assert!(
            bottom[2] > 200 && bottom[0] < 60,
            "{format:?} bottom {bottom:?}"
        );
    }
    // A real photo: rocket turned a quarter and tagged 6 thumbnails like the rocket.
    let s = ThumbnailSpec {
        format: OutputFormat::Png,
        ..spec(160, 160, Fit::Contain)
    };
    let (rocket, turned) = (read("samples/rocket.jpg"), fixture("rocket.orient6.jpg"));
    let stored = imaging::probe(&turned, &Limits::default()).unwrap();
    assert_eq!(stored.orientation, 6);
    assert!(stored.height > stored.width, "stored turned: {stored:?}");
    let upright = read_back(&render(&rocket, &Limits::default(), &s).unwrap());
    let tagged = read_back(&render(&turned, &Limits::default(), &s).unwrap());
    assert_eq!(
        (tagged.width, tagged.height),
        (upright.width, upright.height)
    );
    assert!(upright.width > upright.height, "rocket is landscape");
    let db = psnr(&upright, &tagged);
    println!("rocket vs rocket.orient6: {db:.1} dB");
    assert!(db > 30.0, "{db:.1} dB");
}

#[test]
fn every_format_decodes_back_at_the_stated_size() {
    let bytes = read("photos/camera/GreenMeadow.jpg");
    let mut images = Vec::new();
    for format in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp] {
        for s in [spec(200, 150, Fit::Cover), spec(200, 200, Fit::Contain)] {
            let s = ThumbnailSpec { format, ..s };
            let t = render(&bytes, &Limits::default(), &s).unwrap();
            assert_eq!(t.format, format);
            println!(
                "{}: {}x{}, {} bytes",
                s.cache_key(),
                t.width,
                t.height,
                t.bytes.len()
            );
            images.push((s, read_back(&t)));
        }
    }
    // PNG and WebP are lossless: the same pixels. JPEG q85 is close to them.
    for i in 0..2 {
        let (png, webp, jpeg) = (&images[2 + i].1, &images[4 + i].1, &images[i].1);
        assert_eq!(png, webp, "{}", images[2 + i].0.cache_key());
        let db = psnr(png, jpeg);
        assert!(db > 30.0, "JPEG q85 vs lossless: {db:.1} dB");
    }
}

#[test]
fn shrink_on_load_is_faithful_to_a_full_decode() {
    // Reference: a full-resolution decode, resampled by the crate's Pillow-exact
    // Lanczos3 with the cover geometry (short side 256, centre crop 256×256).
    let reference_spec: PreprocessSpec = toml::from_str(
        r#"
        width = 256
        height = 256
        resize = { mode = "short_side_crop", short_side = 256 }
        filter = "lanczos3"
        normalize = { kind = "scale_offset", scale = 1.0, offset = 0.0 }
        layout = "nhwc"
        decode = "exact"
        "#,
    )
    .unwrap();
    let mut worst = (f64::INFINITY, f64::INFINITY);
    for path in camera_photos() {
        let bytes = common::read_fetched(&path);
        let full = decode(&bytes, &DecodeRequest::default()).unwrap();
        let reference = reference_spec.resize(&full.image).image;
        let png = ThumbnailSpec {
            format: OutputFormat::Png,
            ..ThumbnailSpec::new(256, 256)
        };
        let lossless = read_back(&render(&bytes, &Limits::default(), &png).unwrap());
        let served =
            read_back(&render(&bytes, &Limits::default(), &ThumbnailSpec::new(256, 256)).unwrap());
        let (resize_db, jpeg_db) = (psnr(&reference, &lossless), psnr(&reference, &served));
        println!(
            "{}: {}x{}: resize {resize_db:.1} dB, as JPEG q85 {jpeg_db:.1} dB",
            path.file_name().unwrap().to_string_lossy(),
            full.image.width,
            full.image.height
        );
        worst = (worst.0.min(resize_db), worst.1.min(jpeg_db));
    }
    println!(
        "worst: resize {:.1} dB, JPEG q85 {:.1} dB",
        worst.0, worst.1
    );
    // Measured: resize 44.1 dB at worst (Dune's fine sand ripples), the others
    // 46.5 to 56.4. As JPEG q85 the compression dominates: 29.2 dB at worst (Dune
    // again), 35 to 43 for the others; that bounds the encoder, not the resize.
    assert!(
        worst.0 > 40.0,
        "shrink-on-load + SIMD Lanczos3: {:.1} dB",
        worst.0
    );
    assert!(worst.1 > 27.0, "as served (JPEG q85): {:.1} dB", worst.1);
}

/// A model's input image is decoded as the plan it is given says: in fast
/// mode a plan that needs a larger decode (BRISQUE beside EfficientNet)
/// changes the pixels of a near-square JPEG, in exact mode nothing does.
/// Whether the plan is the one inference uses is checked against the
/// analyzer's own tensor in `crates/server/tests/photos.rs`.
#[test]
fn a_model_input_is_decoded_as_its_plan_says() {
    let toml_text =
        std::fs::read_to_string(common::home().join("models/efficientnet-lite0/model.toml"))
            .expect("EfficientNet's model.toml: run `darkroom models fetch`");
    let config: toml::Value = toml::from_str(&toml_text).unwrap();
    let exact: PreprocessSpec = config["preprocess"].clone().try_into().unwrap();
    assert_eq!(
        (exact.width, exact.height, exact.filter),
        (224, 224, Filter::Bicubic)
    );
    let fast = PreprocessSpec {
        decode: DecodeMode::Fast,
        ..exact.clone()
    };
    // 2400 × 2400 from the 18 MP photo: 1/4 (600) serves EfficientNet
    // alone, a 640-pixel need takes 1/2.
    let big = decode(
        &read("photos/camera/Elephants_5640x3172.jpg"),
        &DecodeRequest::default(),
    )
    .unwrap()
    .image;
    let mut square = RgbImage::filled(2400, 2400, [0, 0, 0]);
    for y in 0..2400usize {
        let from = ((y + 400) * big.width as usize + 1600) * 3;
        square.data[y * 2400 * 3..(y + 1) * 2400 * 3]
            .copy_from_slice(&big.data[from..from + 2400 * 3]);
    }
    let jpeg = imaging::encode(&square, OutputFormat::Jpeg, 90).unwrap();
    let limits = Limits::default();
    let pixels = |spec: &PreprocessSpec, at_least: u32| {
        let t = render_model_input(&jpeg, &limits, spec, |(w, h)| {
            let (sw, sh) = spec.decode_min_size(w, h)?;
            Some((sw.max(at_least), sh.max(at_least)))
        })
        .unwrap();
        assert_eq!(t.format, OutputFormat::Png);
        read_back(&t)
    };
    assert!(
        pixels(&fast, 0) != pixels(&fast, 640),
        "fast: the plan is honoured"
    );
    assert!(
        pixels(&exact, 0) == pixels(&exact, 640),
        "exact: always the full decode"
    );
    let full = decode_to_fit(&jpeg, &limits, |_| None).unwrap();
    assert!(pixels(&exact, 0) == exact.resize_decoded(&full).image);
}

#[test]
fn odd_shapes_never_panic_and_keep_their_promises() {
    let gradient = |w: u32, h: u32| RgbImage {
        width: w,
        height: h,
        data: (0..w * h)
            .flat_map(|i| [(i % 251) as u8, (i / w % 241) as u8, 7])
            .collect(),
    };
    for (w, h) in [(1, 1), (1, 700), (700, 1), (37, 23), (300, 200)] {
        for format in [OutputFormat::Png, OutputFormat::Jpeg] {
            let bytes = imaging::encode(&gradient(w, h), format, 90).unwrap();
            for (bw, bh) in [(1, 1), (64, 64), (5, 0), (0, 900), (640, 3)] {
                for fit in [Fit::Cover, Fit::Contain, Fit::Fill] {
                    for enlarge in [false, true] {
                        for filter in [Filter::Nearest, Filter::Lanczos3] {
                            let s = ThumbnailSpec {
                                fit,
                                enlarge,
                                filter,
                                format: OutputFormat::Png,
                                ..ThumbnailSpec::new(bw, bh)
                            };
                            let what = format!("{w}x{h} {format:?} into {}", s.cache_key());
                            let t = match render(&bytes, &Limits::default(), &s) {
                                Ok(t) => t,
                                // 0x900 of a 700x1 strip, enlarged: 630000x900.
                                Err(e) if e.code() == "output_too_large" => {
                                    assert!(enlarge && (bw == 0 || bh == 0), "{what}: {e}");
                                    continue;
                                }
                                Err(e) => panic!("{what}: {e}"),
                            };
                            let img = read_back(&t);
                            assert!(img.width >= 1 && img.height >= 1, "{what}");
                            if fit != Fit::Contain && bw > 0 && bh > 0 && enlarge {
                                assert_eq!((img.width, img.height), (bw, bh), "{what}");
                            }
                            if !enlarge {
                                assert!(img.width <= w && img.height <= h, "{what}");
                            }
                        }
                    }
                }
            }
        }
    }
}
