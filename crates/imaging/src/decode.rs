//! Bytes to upright RGB8 pixels: JPEG through libjpeg-turbo (with DCT-domain
//! shrink-on-load), PNG and WebP through `image`, converted like PIL's `convert("RGB")`.

use std::io::Cursor;

use turbojpeg::{Decompressor, PixelFormat, ScalingFactor};

use crate::orient::apply_orientation;
use crate::probe::{inspect, JpegFrame};
use crate::{Format, Header, ImagingError, Limits, RgbImage};

/// What to decode and how small it may come out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeRequest {
    pub limits: Limits,
    /// Smallest acceptable decoded size, as (width, height) *after* orientation.
    /// For JPEG this enables libjpeg-turbo's DCT-domain scaling: the smallest of
    /// 1/8, 1/4 and 1/2 whose output is still at least this big on both axes (the
    /// other n/8 factors are slower, see `jpeg_scale`). `None` decodes full size.
    /// PNG and WebP always decode full size.
    pub min_size: Option<(u32, u32)>,
}

/// A decoded, upright photo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The pixels after EXIF orientation (smaller than the original when shrunk on load).
    pub image: RgbImage,
    /// Full-resolution width after orientation.
    pub original_width: u32,
    /// Full-resolution height after orientation.
    pub original_height: u32,
    /// What the decoder read past, as libjpeg and Pillow read past it: the
    /// pixels are all there, but the file does not quite follow its format.
    pub warnings: Vec<DecodeWarning>,
}

/// A flaw a decode read past (see [`Decoded::warnings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeWarning {
    /// Stable, snake_case: `jpeg_stray_bytes`, `jpeg_bad_icc_profile` or
    /// `jpeg_corrupt_data` (a libjpeg warning, named in `message`).
    pub code: &'static str,
    pub message: String,
}

impl Decoded {
    /// Factors that take coordinates in `image` to coordinates in the full-resolution
    /// (oriented) photo; (1, 1) unless the JPEG was shrunk on load.
    pub fn scale_to_original(&self) -> (f32, f32) {
        (
            self.original_width as f32 / self.image.width as f32,
            self.original_height as f32 / self.image.height as f32,
        )
    }
}

/// Progressive JPEGs with absurd scan counts are a known decoder denial of service
/// (each scan re-walks the whole coefficient buffer); real encoders emit about 10.
const MAX_PROGRESSIVE_SCANS: u32 = 500;

/// How much bigger than the resize target a JPEG is decoded at least (DCT scaling
/// picks the smallest of 1/8, 1/4, 1/2 that covers it), so that Lanczos3 still
/// shrinks by 2 or more and antialiases as it would on the full photo; thumbnails
/// and the models' `fast` decode both use it. Measured on the 13 camera JPEGs, 256 px cover
/// against a full decode resampled by the Pillow-exact Lanczos3: 2 gives 44.1 dB
/// PSNR at worst (46.5 to 56.4 for the others) for about 15 % more time than 1,
/// which gives 30.3 dB at worst (a finely textured dune: the DCT's box-like
/// shrink aliases where Lanczos3 would not).
pub(crate) const DECODE_HEADROOM: u32 = 2;

/// The smallest decode that keeps [`DECODE_HEADROOM`] over a resize target.
pub(crate) fn min_decode_size((w, h): (u32, u32)) -> (u32, u32) {
    (
        w.saturating_mul(DECODE_HEADROOM),
        h.saturating_mul(DECODE_HEADROOM),
    )
}

/// Decodes `bytes` into upright RGB8, checking the limits from the header first.
pub fn decode(bytes: &[u8], req: &DecodeRequest) -> Result<Decoded, ImagingError> {
    decode_to_fit(bytes, &req.limits, |_| req.min_size)
}

/// [`decode`] with the smallest acceptable size chosen from the photo's oriented
/// full-resolution size, read from the header that the decode parses anyway
/// (so callers need no [`crate::probe`] of their own first).
pub fn decode_to_fit(
    bytes: &[u8],
    limits: &Limits,
    min_size: impl FnOnce((u32, u32)) -> Option<(u32, u32)>,
) -> Result<Decoded, ImagingError> {
    let (header, frame) = inspect(bytes, limits)?;
    let (original_width, original_height) = header.oriented_size();
    let min_size = min_size((original_width, original_height));
    let mut warnings = Vec::new();
    let stored = match (header.format, frame) {
        (Format::Jpeg, Some(frame)) => {
            // min_size is in oriented axes; the decoder scales stored axes.
            let min = min_size.map(|size| stored_axes(&header, size));
            decode_jpeg(bytes, &header, frame, min, limits, &mut warnings)?
        }
        (Format::Png | Format::Webp, _) => decode_with_image(bytes, &header)?,
        (Format::Jpeg, None) => {
            return Err(ImagingError::Internal {
                reason: "JPEG header without frame details".into(),
            })
        }
    };
    Ok(Decoded {
        image: apply_orientation(stored, header.orientation),
        original_width,
        original_height,
        warnings,
    })
}

/// A size in oriented axes, in the stored axes the decoder scales.
fn stored_axes(header: &Header, (w, h): (u32, u32)) -> (u32, u32) {
    if header.orientation >= 5 {
        (h, w)
    } else {
        (w, h)
    }
}

/// What decoding a photo takes, read from its header alone: what admission
/// prices a photo by before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeEstimate {
    pub format: Format,
    /// Pixels the decode produces (fewer than stored when a JPEG shrinks on load).
    pub decoded_pixels: u64,
    /// Pixels as stored.
    pub stored_pixels: u64,
    /// A progressive JPEG: entropy-bound, several times a baseline's decode.
    pub progressive: bool,
}

/// [`decode_to_fit`]'s plan without the decode: the same header walk, the
/// same shrink-on-load choice.
pub fn estimate_decode(
    bytes: &[u8],
    limits: &Limits,
    min_size: impl FnOnce((u32, u32)) -> Option<(u32, u32)>,
) -> Result<DecodeEstimate, ImagingError> {
    let (header, frame) = inspect(bytes, limits)?;
    let stored_pixels = u64::from(header.width) * u64::from(header.height);
    let (decoded_pixels, progressive) = match frame {
        Some(frame) => {
            let min = min_size(header.oriented_size()).map(|size| stored_axes(&header, size));
            let scale = shrink_on_load(header.width, header.height, frame.lossless, min);
            let (w, h) = (
                scale.scale(header.width as usize) as u64,
                scale.scale(header.height as usize) as u64,
            );
            (w * h, frame.progressive)
        }
        None => (stored_pixels, false),
    };
    Ok(DecodeEstimate {
        format: header.format,
        decoded_pixels,
        stored_pixels,
        progressive,
    })
}

/// The DCT scale a JPEG is decoded at: [`jpeg_scale`], except that a
/// lossless JPEG cannot be scaled. [`decode_to_fit`] and [`estimate_decode`]
/// both choose with it, so admission prices the decode that happens.
fn shrink_on_load(
    width: u32,
    height: u32,
    lossless: bool,
    min: Option<(u32, u32)>,
) -> ScalingFactor {
    if lossless {
        ScalingFactor::ONE
    } else {
        jpeg_scale(width, height, min)
    }
}

/// The smallest of 1/8, 1/4 and 1/2 whose output covers `min` on both axes, else 1.
///
/// libjpeg-turbo offers every n/8, but only these have SIMD reduced-size IDCTs.
/// Measured here (release, one thread, 1280×1024 to 2560×1920 camera JPEGs): 3/8
/// decodes no faster than 1/2, and 5/8, 6/8 and 7/8 take 1.2–2× as long as a *full*
/// decode, so the in-between factors would only ever cost time.
pub(crate) fn jpeg_scale(width: u32, height: u32, min: Option<(u32, u32)>) -> ScalingFactor {
    let Some((min_w, min_h)) = min else {
        return ScalingFactor::ONE;
    };
    let covers = |f: &ScalingFactor| {
        f.scale(width as usize) >= min_w as usize && f.scale(height as usize) >= min_h as usize
    };
    [
        ScalingFactor::ONE_EIGHTH,
        ScalingFactor::ONE_QUARTER,
        ScalingFactor::ONE_HALF,
    ]
    .into_iter()
    .find(covers)
    .unwrap_or(ScalingFactor::ONE)
}

fn decode_jpeg(
    bytes: &[u8],
    header: &Header,
    frame: JpegFrame,
    min: Option<(u32, u32)>,
    limits: &Limits,
    warnings: &mut Vec<DecodeWarning>,
) -> Result<RgbImage, ImagingError> {
    let tj = |e: turbojpeg::Error| jpeg_error(&e);
    let mut d = Decompressor::new().map_err(|e| ImagingError::Internal {
        reason: e.to_string(),
    })?;
    d.set_scan_limit(MAX_PROGRESSIVE_SCANS).map_err(tj)?;
    // libjpeg is the authority on the frame size it will write; re-check the limit
    // against it in case our marker walk and libjpeg disagree on a malformed file.
    // Stray bytes before a header marker (Photoshop and some cameras write
    // them) draw a libjpeg warning that TurboJPEG reports as a failure of
    // the header read, before any pixel is decoded; libjpeg and Pillow skip
    // them. So they are dropped here first.
    let cleaned = without_stray_header_bytes(bytes, warnings);
    let bytes: &[u8] = &cleaned;
    let th = d.read_header(bytes).map_err(tj)?;
    let (th_width, th_height, th_lossless) = (th.width, th.height, th.is_lossless);
    let (width, height) = (th_width as u32, th_height as u32);
    if (width, height) != (header.width, header.height)
        && u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(ImagingError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    let scale = shrink_on_load(width, height, frame.lossless || th_lossless, min);
    d.set_scaling_factor(scale).map_err(tj)?;
    let (w, h) = (scale.scale(th_width), scale.scale(th_height));
    let cmyk = frame.components == 4;
    let format = if cmyk {
        PixelFormat::CMYK
    } else {
        PixelFormat::RGB
    };
    let pitch = w * format.size();
    // vec![0; n] is calloc: fresh zero pages, no memset pass over a 50 MB buffer.
    let mut pixels = vec![0u8; pitch * h];
    let image = turbojpeg::Image {
        pixels: pixels.as_mut_slice(),
        width: w,
        pitch,
        height: h,
        format,
    };
    // TurboJPEG finishes the decode after a libjpeg warning and then
    // reports it as a failure: the pixels are there, as Pillow has them.
    if let Err(e) = d.decompress(bytes, image) {
        match libjpeg_warning(&e) {
            Some(message) => warnings.push(DecodeWarning {
                code: "jpeg_corrupt_data",
                message: message.to_string(),
            }),
            None => return Err(jpeg_error(&e)),
        }
    }
    if cmyk {
        cmyk_to_rgb_in_place(&mut pixels);
    }
    Ok(RgbImage {
        width: w as u32,
        height: h as u32,
        data: pixels,
    })
}

/// `b` with any bytes between its header segments (SOI to the first SOS)
/// and its ICC profile segments left out; `b` itself when there are none,
/// or when its segments do not add up (the decoder then says what is wrong).
/// Stray bytes and malformed ICC segments are noted in `warnings`.
fn without_stray_header_bytes<'a>(
    b: &'a [u8],
    warnings: &mut Vec<DecodeWarning>,
) -> std::borrow::Cow<'a, [u8]> {
    use std::borrow::Cow;
    let mut noted = Vec::new();
    let mut frame_seen = false;
    // SOI first, then each segment kept.
    let mut kept: Vec<std::ops::Range<usize>> = Vec::new();
    kept.push(0..2);
    let mut i = 2;
    // Bytes skipped since the last segment (a stuffed 0xFF00 counts too).
    let mut stray = 0;
    loop {
        let from = i;
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        stray += i - from;
        // Fill bytes: any run of 0xFF before the code.
        while i + 1 < b.len() && b[i + 1] == 0xFF {
            i += 1;
        }
        let Some(&code) = b.get(i + 1) else {
            return Cow::Borrowed(b);
        };
        if code == 0x00 {
            // A stuffed zero is not a marker: stray too.
            stray += 2;
            i += 2;
            continue;
        }
        if stray > 0 {
            noted.push(DecodeWarning {
                code: "jpeg_stray_bytes",
                message: format!(
                    "{stray} stray byte{} before marker 0x{code:02X} skipped",
                    if stray == 1 { "" } else { "s" }
                ),
            });
            stray = 0;
        }
        match code {
            0x01 | 0xD0..=0xD7 => {
                kept.push(i..i + 2);
                i += 2;
            }
            0xDA => {
                kept.push(i..b.len());
                break;
            }
            _ => {
                let Some(len) = b
                    .get(i + 2..i + 4)
                    .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                else {
                    return Cow::Borrowed(b);
                };
                if len < 2 || i + 2 + len > b.len() {
                    return Cow::Borrowed(b);
                }
                // ICC profiles do not change the decoded pixels (Pillow's
                // convert("RGB") ignores them too), and a malformed one (a
                // sequence number out of range, a profile after the frame
                // header) is another header warning TurboJPEG fails on.
                let payload = &b[i + 4..i + 2 + len];
                let icc = code == 0xE2 && payload.starts_with(b"ICC_PROFILE\0");
                if icc {
                    // Sequence number (1-based) and count follow the tag.
                    let (seq, count) = (payload.get(12), payload.get(13));
                    let flaw = match (seq, count) {
                        _ if frame_seen => Some("after the frame header"),
                        (Some(&s), Some(&n)) if s == 0 || s > n => Some("numbered out of range"),
                        (Some(_), Some(_)) => None,
                        _ => Some("cut short"),
                    };
                    if let Some(flaw) = flaw {
                        noted.push(DecodeWarning {
                            code: "jpeg_bad_icc_profile",
                            message: format!("an ICC profile segment {flaw} was skipped"),
                        });
                    }
                } else {
                    kept.push(i..i + 2 + len);
                }
                frame_seen |= matches!(code, 0xC0..=0xCF) && !matches!(code, 0xC4 | 0xC8 | 0xCC);
                i += 2 + len;
            }
        }
    }
    warnings.extend(noted);
    if kept.iter().map(|r| r.len()).sum::<usize>() == b.len() {
        return Cow::Borrowed(b);
    }
    Cow::Owned(
        kept.into_iter()
            .flat_map(|r| b[r].iter().copied())
            .collect(),
    )
}

/// The message of a libjpeg *warning* (its `JWRN_` messages): the decode
/// went on to the last row, and Pillow, which ignores warnings, returns
/// those pixels. TurboJPEG 3 reports a warning as a failure, so it is told
/// apart by its message. A premature end of file is a warning to libjpeg
/// too, but Pillow refuses a truncated file, and so does Darkroom.
fn libjpeg_warning(e: &turbojpeg::Error) -> Option<&str> {
    const WARNINGS: [&str; 12] = [
        "Unknown Adobe color transform",
        "Inconsistent progression sequence",
        "extraneous bytes before marker",
        "premature end of data segment",
        "bad Huffman code",
        "unknown JFIF revision",
        "instead of RST",
        "Invalid SOS parameters for sequential JPEG",
        "Application transferred too many scanlines",
        "bad arithmetic code",
        "bad ICC marker",
        "Corrupt JPEG data",
    ];
    match e {
        turbojpeg::Error::TurboJpegError(msg)
            if !msg.contains("Premature end of JPEG file")
                && WARNINGS.iter().any(|w| msg.contains(w)) =>
        {
            Some(msg)
        }
        _ => None,
    }
}

fn jpeg_error(e: &turbojpeg::Error) -> ImagingError {
    match e {
        turbojpeg::Error::TurboJpegError(msg) if msg.contains("Premature end of JPEG file") => {
            ImagingError::Truncated {
                format: Format::Jpeg,
            }
        }
        turbojpeg::Error::TurboJpegError(msg) => ImagingError::corrupt(Format::Jpeg, msg.clone()),
        turbojpeg::Error::CannotScaleLossless => ImagingError::UnsupportedFeature {
            format: Format::Jpeg,
            reason: e.to_string(),
        },
        other => ImagingError::Internal {
            reason: other.to_string(),
        },
    }
}

/// PIL reads every CMYK JPEG with Adobe's inverted polarity ("CMYK;I") and converts
/// with `cmyk2rgb`; this is that arithmetic, compacting 4 bytes to 3 in place.
fn cmyk_to_rgb_in_place(px: &mut Vec<u8>) {
    let n = px.len() / 4;
    for i in 0..n {
        let s = i * 4;
        let nk = u32::from(px[s + 3]); // 255 - (255 - stored k)
        let mut rgb = [0u8; 3];
        for (c, out) in rgb.iter_mut().enumerate() {
            let ink = 255 - u32::from(px[s + c]);
            let t = ink * nk + 128;
            let mul = ((t >> 8) + t) >> 8;
            *out = nk.saturating_sub(mul) as u8;
        }
        px[i * 3..i * 3 + 3].copy_from_slice(&rgb);
    }
    px.truncate(n * 3);
}

fn decode_with_image(bytes: &[u8], header: &Header) -> Result<RgbImage, ImagingError> {
    let format = header.format;
    let image_format = match format {
        Format::Png => image::ImageFormat::Png,
        _ => image::ImageFormat::WebP,
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image_format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(header.width);
    limits.max_image_height = Some(header.height);
    // The largest output (16-bit RGBA) plus room for the decoder's own buffers.
    let pixels = u64::from(header.width) * u64::from(header.height);
    limits.max_alloc = Some(pixels * 8 + (64 << 20));
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| image_error(format, header, e))?;
    Ok(to_rgb8(img))
}

fn image_error(format: Format, header: &Header, e: image::ImageError) -> ImagingError {
    use image::ImageError as E;
    let eof = |msg: &str| {
        let msg = msg.to_ascii_lowercase();
        msg.contains("eof") || msg.contains("end of file") || msg.contains("unexpected end")
    };
    match e {
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImagingError::Truncated { format }
        }
        E::Decoding(d) if eof(&d.to_string()) => ImagingError::Truncated { format },
        E::Decoding(d) => ImagingError::corrupt(format, d.to_string()),
        E::IoError(io) if eof(&io.to_string()) => ImagingError::Truncated { format },
        E::IoError(io) => ImagingError::corrupt(format, io.to_string()),
        E::Limits(_) => ImagingError::TooManyPixels {
            width: header.width,
            height: header.height,
            limit: u64::from(header.width) * u64::from(header.height),
        },
        E::Unsupported(u) => ImagingError::UnsupportedFeature {
            format,
            reason: u.to_string(),
        },
        other => ImagingError::Internal {
            reason: other.to_string(),
        },
    }
}

/// PIL `convert("RGB")`: grey is replicated, alpha dropped, 16-bit samples keep their
/// high byte (PIL's "RGB;16B" raw mode truncates rather than rounds).
///
/// One deliberate difference: PIL opens 16-bit greyscale as mode "I;16" and its
/// conversion to RGB *clips* at 255, turning almost every such photo white; here
/// the high byte is kept, as for the colour modes.
fn to_rgb8(img: image::DynamicImage) -> RgbImage {
    use image::DynamicImage as D;
    let (width, height) = (img.width(), img.height());
    let data = match img {
        D::ImageRgb8(b) => b.into_raw(),
        D::ImageRgba8(b) => {
            let mut v = b.into_raw();
            compact_in_place(&mut v, 4);
            v
        }
        D::ImageLuma8(b) => b.into_raw().iter().flat_map(|&g| [g, g, g]).collect(),
        D::ImageLumaA8(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        D::ImageRgb16(b) => b.into_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        D::ImageRgba16(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            .collect(),
        D::ImageLuma16(b) => b
            .into_raw()
            .iter()
            .flat_map(|&v| [(v >> 8) as u8; 3])
            .collect(),
        D::ImageLumaA16(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [(p[0] >> 8) as u8; 3])
            .collect(),
        other => other.into_rgb8().into_raw(),
    };
    RgbImage {
        width,
        height,
        data,
    }
}

/// Keeps the first 3 bytes of every `stride`-byte pixel, reusing the buffer.
fn compact_in_place(v: &mut Vec<u8>, stride: usize) {
    let n = v.len() / stride;
    for i in 0..n {
        v.copy_within(i * stride..i * stride + 3, i * 3);
    }
    v.truncate(n * 3);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_the_smallest_that_covers_min_size() {
        // 4000×3000 needing 512×384: 1/8 gives exactly 500×375 (too small), 2/8 fits.
        let f = jpeg_scale(4000, 3000, Some((512, 384)));
        assert_eq!((f.num(), f.denom()), (1, 4));
        let f = jpeg_scale(4000, 3000, Some((500, 375)));
        assert_eq!((f.num(), f.denom()), (1, 8));
        let f = jpeg_scale(4000, 3000, Some((1001, 10)));
        assert_eq!((f.num(), f.denom()), (1, 2));
        // 7/8 would cover it, but decodes slower than a full decode.
        assert_eq!(jpeg_scale(4000, 3000, Some((3001, 10))), ScalingFactor::ONE);
        assert_eq!(jpeg_scale(640, 480, Some((1000, 1000))), ScalingFactor::ONE);
        assert_eq!(jpeg_scale(640, 480, None), ScalingFactor::ONE);
    }

    /// A JPEG of a 64×32 image, left half red and right half blue, with an EXIF
    /// APP1 segment saying `orientation` inserted after SOI.
    fn red_blue_jpeg(orientation: u16) -> Vec<u8> {
        let (w, h) = (64usize, 32usize);
        let pixels: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                if i % w < w / 2 {
                    [255, 0, 0]
                } else {
                    [0, 0, 255]
                }
            })
            .collect();
        let image = turbojpeg::Image {
            pixels: pixels.as_slice(),
            width: w,
            pitch: w * 3,
            height: h,
            format: PixelFormat::RGB,
        };
        let jpeg = turbojpeg::compress(image, 95, turbojpeg::Subsamp::None).unwrap();
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(crate::probe::tests::exif_orientation_block(orientation));
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend(app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    /// Regression (issue 17): stray bytes before a header marker draw a
    /// libjpeg warning, which TurboJPEG reports as a failure of the header
    /// read; Pillow decodes such files, and so must we, to the same pixels.
    #[test]
    fn stray_bytes_before_a_marker_are_a_warning_not_a_failure() {
        let clean = red_blue_jpeg(1);
        // After SOI and the EXIF segment: junk, then the next marker.
        let app1_end = 4 + usize::from(u16::from_be_bytes([clean[4], clean[5]]));
        for junk in [&b"\x00\x11\x22"[..], &b"junk"[..]] {
            let mut stray = clean[..app1_end].to_vec();
            stray.extend_from_slice(junk);
            stray.extend_from_slice(&clean[app1_end..]);
            let want = decode(&clean, &DecodeRequest::default()).unwrap();
            assert!(want.warnings.is_empty(), "{:?}", want.warnings);
            let got = decode(&stray, &DecodeRequest::default())
                .unwrap_or_else(|e| panic!("{junk:?} before a marker: {e}"));
            assert_eq!(got.image, want.image, "{junk:?}: the same pixels");
            // ...and the analysis says what was read past.
            assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
            assert_eq!(got.warnings[0].code, "jpeg_stray_bytes");
            let n = junk.len();
            assert!(
                got.warnings[0]
                    .message
                    .starts_with(&format!("{n} stray bytes")),
                "{}",
                got.warnings[0].message
            );
            // Shrunk on load too.
            let req = DecodeRequest {
                min_size: Some((16, 8)),
                ..DecodeRequest::default()
            };
            let small = decode(&stray, &req).unwrap();
            assert_eq!((small.image.width, small.image.height), (16, 8));
            // Uploads probe the header and check the file is whole: both pass.
            crate::probe(&stray, &Limits::default()).expect("the probe reads it");
            crate::check_complete(&stray).expect("the file is whole");
        }
        // A malformed ICC profile segment (sequence number 0 of 0) is
        // skipped: it does not change the pixels.
        let mut bad_icc = clean[..app1_end].to_vec();
        let payload = b"ICC_PROFILE\0\x00\x00not a profile";
        bad_icc.extend_from_slice(&[0xFF, 0xE2]);
        bad_icc.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        bad_icc.extend_from_slice(payload);
        bad_icc.extend_from_slice(&clean[app1_end..]);
        let want = decode(&clean, &DecodeRequest::default()).unwrap();
        let got = decode(&bad_icc, &DecodeRequest::default()).expect("a bad ICC segment");
        assert_eq!(got.image, want.image);
        let codes: Vec<&str> = got.warnings.iter().map(|w| w.code).collect();
        assert_eq!(codes, ["jpeg_bad_icc_profile"]);
        // A file cut short is still truncated, as Pillow says too.
        let cut = &clean[..clean.len() / 2];
        assert!(matches!(
            decode(cut, &DecodeRequest::default()),
            Err(ImagingError::Truncated { .. })
        ));
    }

    #[test]
    fn jpeg_exif_orientation_is_applied_end_to_end() {
        // Where the red half ends up after each orientation (stored: red on the left).
        let red_at = |o: u8| match o {
            1 | 4 => "left",
            2 | 3 => "right",
            // Transpose and the clockwise turn take the left edge to the top;
            // transverse and the counter-clockwise turn take it to the bottom.
            5 | 6 => "top",
            _ => "bottom",
        };
        for o in 1..=8u8 {
            let decoded = decode(&red_blue_jpeg(u16::from(o)), &DecodeRequest::default()).unwrap();
            let img = &decoded.image;
            let expected_size = if o >= 5 { (32, 64) } else { (64, 32) };
            assert_eq!((img.width, img.height), expected_size, "orientation {o}");
            assert_eq!(
                (decoded.original_width, decoded.original_height),
                expected_size
            );
            let (probe_x, probe_y) = match red_at(o) {
                "left" => (4, img.height / 2),
                "right" => (img.width - 5, img.height / 2),
                "top" => (img.width / 2, 4),
                _ => (img.width / 2, img.height - 5),
            };
            let p = img.pixel(probe_x, probe_y);
            assert!(
                p[0] > 200 && p[2] < 60,
                "orientation {o}: {p:?} at ({probe_x}, {probe_y})"
            );
        }
    }

    #[test]
    fn min_size_is_read_in_oriented_axes() {
        // Stored 64×32 with orientation 6: oriented 32×64. Asking for 16×32 allows 1/2.
        let req = DecodeRequest {
            min_size: Some((16, 32)),
            ..DecodeRequest::default()
        };
        let decoded = decode(&red_blue_jpeg(6), &req).unwrap();
        assert_eq!((decoded.image.width, decoded.image.height), (16, 32));
        assert_eq!((decoded.original_width, decoded.original_height), (32, 64));
        assert_eq!(decoded.scale_to_original(), (2.0, 2.0));
    }

    #[test]
    fn cmyk_matches_pil_arithmetic() {
        // Stored (inverted) CMYK: 255 means no ink. White, black, pure cyan ink.
        let mut px = vec![255, 255, 255, 255, 255, 255, 255, 0, 0, 255, 255, 255];
        cmyk_to_rgb_in_place(&mut px);
        assert_eq!(px, vec![255, 255, 255, 0, 0, 0, 0, 255, 255]);
    }

    #[test]
    fn sixteen_bit_keeps_the_high_byte_like_pil() {
        let buf = image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(
            2,
            1,
            vec![0u16, 255, 256, 383, 65280, 65535],
        )
        .unwrap();
        let rgb = to_rgb8(image::DynamicImage::ImageRgb16(buf));
        assert_eq!(rgb.data, vec![0, 0, 1, 1, 255, 255]);
    }
}
