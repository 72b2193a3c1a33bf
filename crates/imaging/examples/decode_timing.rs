//! Times decode (exact vs shrink-on-load) and resize for camera JPEGs, one thread.
//!
//! `cargo run --release -p imaging --example decode_timing [photo.jpg ...]`
//! (defaults to camera JPEGs from `darkroom models fetch` in the Darkroom home's
//! `photos/camera/`: `$DARKROOM_HOME`, else `var/` at the workspace root).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use imaging::{
    decode, probe, DecodeMode, DecodeRequest, Filter, Layout, Limits, Normalize, PreprocessSpec,
    ResizeMode, RgbImage,
};

/// Relative to the Darkroom home.
const DEFAULTS: [&str; 3] = [
    "photos/camera/Elephants_5640x3172.jpg",
    "photos/camera/Wood.jpg",
    "photos/camera/GreenMeadow.jpg",
];

/// `$DARKROOM_HOME` (a relative one from the workspace root), else `var/` there.
fn home() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    match std::env::var_os("DARKROOM_HOME") {
        Some(home) if !home.is_empty() => root.join(home),
        _ => root.join("var"),
    }
}

/// The crate's short-side size: long side `round(256 * long / short)`, half to even.
fn short_side_256(w: u32, h: u32) -> (u32, u32) {
    let short = u64::from(w.min(h));
    let long = |l: u32| {
        let (q, r) = (256 * u64::from(l) / short, 256 * u64::from(l) % short);
        (q + u64::from(2 * r > short || (2 * r == short && q % 2 == 1))) as u32
    };
    if w <= h {
        (256, long(h))
    } else {
        (long(w), 256)
    }
}

fn effnet(decode: DecodeMode) -> PreprocessSpec {
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
        decode,
    }
}

/// Median of `runs` timings of `f`, after one warm-up call.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    std::hint::black_box(f());
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    samples.sort();
    samples[runs / 2]
}

fn ms(d: Duration) -> String {
    format!("{:7.2} ms", d.as_secs_f64() * 1e3)
}

/// fast_image_resize's own single call (vertical pass first) on the same region,
/// for comparison with the crate's Pillow-exact passes.
fn native_single_call(img: &RgbImage, resizer: &mut Resizer) -> Vec<u8> {
    let (w, h) = (img.width, img.height);
    let scale = 256.0 / f64::from(w.min(h));
    let (rw, rh) = short_side_256(w, h);
    let (left, top) = ((rw - 224) / 2, (rh - 224) / 2);
    let src = ImageRef::new(w, h, &img.data, PixelType::U8x3).unwrap();
    let mut dst = Image::new(224, 224, PixelType::U8x3);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom))
        .crop(
            f64::from(left) / scale,
            f64::from(top) / scale,
            224.0 / scale,
            224.0 / scale,
        );
    resizer.resize(&src, &mut dst, &options).unwrap();
    dst.into_vec()
}

/// Resizing the whole photo to the short-side size and cropping afterwards: what the
/// region-only resize avoids.
fn full_then_crop(img: &RgbImage, resizer: &mut Resizer) -> Vec<u8> {
    let (w, h) = (img.width, img.height);
    let (rw, rh) = short_side_256(w, h);
    let src = ImageRef::new(w, h, &img.data, PixelType::U8x3).unwrap();
    let mut full = Image::new(rw, rh, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    resizer.resize(&src, &mut full, &options).unwrap();
    let (left, top) = ((rw - 224) / 2, (rh - 224) / 2);
    let row = rw as usize * 3;
    let buf = full.buffer();
    (0..224)
        .flat_map(|y| {
            let start = (top as usize + y) * row + left as usize * 3;
            buf[start..start + 224 * 3].iter().copied()
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let paths: Vec<PathBuf> = if args.is_empty() {
        DEFAULTS.iter().map(|p| home().join(p)).collect()
    } else {
        args.into_iter().map(PathBuf::from).collect()
    };
    let runs = 9;
    for path in paths {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the default photos come from `darkroom models fetch`)",
                path.display()
            )
        });
        let header = probe(&bytes, &Limits::default()).unwrap();
        let (w, h) = header.oriented_size();
        println!("{}\n  {w}x{h}, {} KB", path.display(), bytes.len() / 1024);
        for mode in [DecodeMode::Exact, DecodeMode::Fast] {
            let spec = effnet(mode);
            let req = DecodeRequest {
                limits: Limits::default(),
                min_size: spec.decode_min_size(w, h),
            };
            let decoded = decode(&bytes, &req).unwrap();
            let t_decode = time(runs, || decode(&bytes, &req).unwrap());
            let t_resize = time(runs, || spec.resize_decoded(&decoded));
            let mut tensor = vec![0.0; spec.tensor_len()];
            let resized = spec.resize_decoded(&decoded).image;
            let t_tensor = time(runs, || spec.write_tensor(&resized, &mut tensor));
            println!(
                "  {mode:?}: decode {} -> {}x{}, resize {}, tensor {}, total {}",
                ms(t_decode),
                decoded.image.width,
                decoded.image.height,
                ms(t_resize),
                ms(t_tensor),
                ms(t_decode + t_resize + t_tensor)
            );
            if mode == DecodeMode::Exact {
                let mut resizer = Resizer::new();
                let t_native = time(runs, || native_single_call(&decoded.image, &mut resizer));
                let t_full = time(runs, || full_then_crop(&decoded.image, &mut resizer));
                println!(
                    "         resize alternatives: fast_image_resize single call {}, full resize then crop {}",
                    ms(t_native),
                    ms(t_full)
                );
            }
        }
    }
}
