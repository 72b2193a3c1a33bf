use imaging::{decode, DecodeRequest, DecodeMode, Filter, Layout, Normalize, PreprocessSpec, ResizeMode};
#[test]
fn dump() {
    let spec = PreprocessSpec { width: 224, height: 224, resize: ResizeMode::ShortSideCrop { short_side: 256 }, filter: Filter::Bicubic,
        normalize: Normalize::MeanStd { mean: [127.0; 3], std: [128.0; 3] }, layout: Layout::Nchw, decode: DecodeMode::Exact };
    for name in ["chelsea.cmyk.jpg"] {
        let p = format!("{}/tests/fixtures/parity/inputs/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(p).unwrap();
        let d = decode(&bytes, &DecodeRequest::default()).unwrap();
        let r = spec.resize_decoded(&d).image;
        let img = image::RgbImage::from_raw(r.width, r.height, r.data).unwrap();
        img.save(format!("/tmp/ours.effnet.{name}.png")).unwrap();
    }
}
