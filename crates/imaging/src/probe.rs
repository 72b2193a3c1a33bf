//! Header-only inspection: format sniffing, stored dimensions, EXIF orientation and the
//! resource limits, all checked before a single pixel is decoded.

use serde::{Deserialize, Serialize};

use crate::ImagingError;

/// Resource limits applied to untrusted input before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest encoded file accepted, in bytes. Default 64 MiB: a 100 MP camera
    /// JPEG at high quality is about 40 MB; anything bigger is not a photo upload.
    pub max_bytes: usize,
    /// Largest `width * height` accepted, from the header, before decoding.
    /// Default 100,000,000 (100 MP): the decoded RGB buffer is then at most
    /// 300 MB (600 MB at peak while an axis-swapping EXIF rotation is applied),
    /// the worst case a worker must be sized for.
    pub max_pixels: u64,
}

impl Limits {
    /// 64 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
    /// 100 megapixels.
    pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_pixels: Self::DEFAULT_MAX_PIXELS,
        }
    }
}

/// The encodings this crate decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Jpeg,
    Png,
    Webp,
}

/// What [`probe`] learns from the header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub format: Format,
    /// Stored (pre-orientation) width.
    pub width: u32,
    /// Stored (pre-orientation) height.
    pub height: u32,
    /// EXIF orientation 1..=8; 1 when absent or invalid (as PIL's `exif_transpose` treats it).
    pub orientation: u8,
}

impl Header {
    /// Dimensions after EXIF orientation: orientations 5..=8 swap the axes.
    pub fn oriented_size(&self) -> (u32, u32) {
        if self.orientation >= 5 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// JPEG facts the decoder needs beyond the [`Header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JpegFrame {
    pub components: u8,
    /// Lossless JPEG (SOF3/7/11/15) cannot be DCT-scaled.
    pub lossless: bool,
    /// Progressive JPEG (SOF2/6/10/14): every scan re-walks the coefficients.
    pub progressive: bool,
}

/// Reads the header of `bytes` without decoding pixels, enforcing `limits`:
/// the byte count first, then `width * height` as declared by the header.
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<Header, ImagingError> {
    inspect(bytes, limits).map(|(header, _)| header)
}

/// [`probe`], plus the JPEG frame details the decoder reuses.
pub(crate) fn inspect(
    bytes: &[u8],
    limits: &Limits,
) -> Result<(Header, Option<JpegFrame>), ImagingError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImagingError::TooManyBytes {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let format = sniff(bytes)?;
    let (
        Container {
            width,
            height,
            exif,
        },
        frame,
    ) = match format {
        Format::Jpeg => {
            let (container, frame) = jpeg_header(bytes)?;
            (container, Some(frame))
        }
        Format::Png => (png_header(bytes)?, None),
        Format::Webp => (webp_header(bytes)?, None),
    };
    if width == 0 || height == 0 {
        return Err(ImagingError::EmptyImage {
            format,
            width,
            height,
        });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImagingError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    let orientation = exif.map_or(1, orientation_from_exif);
    let header = Header {
        format,
        width,
        height,
        orientation,
    };
    Ok((header, frame))
}

/// Identifies the format from magic bytes; names common others in the error.
pub(crate) fn sniff(bytes: &[u8]) -> Result<Format, ImagingError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if bytes.starts_with(PNG_SIGNATURE) {
        return Ok(Format::Png);
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Ok(Format::Webp);
    }
    let detected = if bytes.is_empty() {
        "empty input"
    } else if bytes.starts_with(b"GIF8") {
        "gif"
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        "tiff"
    } else if bytes.starts_with(b"BM") {
        "bmp"
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        match &bytes[8..12] {
            b"avif" | b"avis" => "avif",
            b"heic" | b"heix" | b"mif1" | b"msf1" => "heif",
            _ => "iso media",
        }
    } else if bytes.starts_with(&[0xFF, 0xD8]) || PNG_SIGNATURE.starts_with(bytes) {
        // A JPEG or PNG signature cut short.
        "truncated signature"
    } else {
        "unknown"
    };
    Err(ImagingError::UnsupportedFormat { detected })
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// What every container walk yields: the stored size and the raw EXIF (TIFF) block.
struct Container<'a> {
    width: u32,
    height: u32,
    exif: Option<&'a [u8]>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le24(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], 0])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Walks the JPEG marker segments up to the first scan: the frame header gives the
/// size, the first APP1 `Exif` segment the orientation (PIL also keeps the first).
fn jpeg_header(b: &[u8]) -> Result<(Container<'_>, JpegFrame), ImagingError> {
    let truncated = ImagingError::Truncated {
        format: Format::Jpeg,
    };
    let mut exif = None;
    let mut frame = None;
    let mut i = 2;
    loop {
        // Skip anything up to the next marker prefix, then any fill bytes; libjpeg
        // tolerates stray bytes here with a warning, so must we.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = b.get(i) else {
            return Err(truncated);
        };
        i += 1;
        match code {
            0x01 | 0xD0..=0xD8 => continue, // stand-alone markers
            0xD9 => return Err(ImagingError::corrupt(Format::Jpeg, "no image before EOI")),
            0xDA => {
                let Some((width, height, frame)) = frame else {
                    return Err(ImagingError::corrupt(
                        Format::Jpeg,
                        "scan before frame header",
                    ));
                };
                let container = Container {
                    width,
                    height,
                    exif,
                };
                return Ok((container, frame));
            }
            _ => {}
        }
        if i + 2 > b.len() {
            return Err(truncated);
        }
        let len = usize::from(be16(b, i));
        if len < 2 {
            return Err(ImagingError::corrupt(
                Format::Jpeg,
                "segment length below 2",
            ));
        }
        let Some(seg) = b.get(i + 2..i + len) else {
            return Err(truncated);
        };
        match code {
            // Start-of-frame markers; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
            0xC0..=0xCF if !matches!(code, 0xC4 | 0xC8 | 0xCC) => {
                if seg.len() < 6 {
                    return Err(ImagingError::corrupt(Format::Jpeg, "short frame header"));
                }
                if seg[0] != 8 {
                    return Err(ImagingError::UnsupportedFeature {
                        format: Format::Jpeg,
                        reason: format!("{}-bit samples", seg[0]),
                    });
                }
                let components = seg[5];
                if !matches!(components, 1 | 3 | 4) {
                    return Err(ImagingError::UnsupportedFeature {
                        format: Format::Jpeg,
                        reason: format!("{components} colour components"),
                    });
                }
                let lossless = matches!(code, 0xC3 | 0xC7 | 0xCB | 0xCF);
                let progressive = matches!(code, 0xC2 | 0xC6 | 0xCA | 0xCE);
                let (h, w) = (u32::from(be16(seg, 1)), u32::from(be16(seg, 3)));
                frame.get_or_insert((
                    w,
                    h,
                    JpegFrame {
                        components,
                        lossless,
                        progressive,
                    },
                ));
            }
            0xE1 if exif.is_none() && seg.starts_with(b"Exif\0\0") => exif = Some(&seg[6..]),
            _ => {}
        }
        i += len;
    }
}

/// IHDR gives the size; the eXIf chunk (wherever it is) the orientation.
fn png_header(b: &[u8]) -> Result<Container<'_>, ImagingError> {
    if b.len() < 8 + 8 + 13 {
        return Err(ImagingError::Truncated {
            format: Format::Png,
        });
    }
    if &b[12..16] != b"IHDR" || be32(b, 8) != 13 {
        return Err(ImagingError::corrupt(
            Format::Png,
            "first chunk is not IHDR",
        ));
    }
    let (width, height) = (be32(b, 16), be32(b, 20));
    // Chunks are skipped by length, so this costs one step per chunk, not per byte.
    let mut exif = None;
    let mut i = 8;
    while i + 8 <= b.len() {
        let len = be32(b, i) as usize;
        let kind = &b[i + 4..i + 8];
        let Some(data) = b.get(i + 8..(i + 8).saturating_add(len)) else {
            break;
        };
        match kind {
            b"eXIf" => {
                exif = Some(data);
                break;
            }
            b"IEND" => break,
            _ => {}
        }
        i = i.saturating_add(12).saturating_add(len);
    }
    Ok(Container {
        width,
        height,
        exif,
    })
}

/// The first chunk (VP8, VP8L or VP8X) gives the size; an EXIF chunk the orientation.
fn webp_header(b: &[u8]) -> Result<Container<'_>, ImagingError> {
    let truncated = ImagingError::Truncated {
        format: Format::Webp,
    };
    if b.len() < 20 {
        return Err(truncated);
    }
    let kind = &b[12..16];
    let data = &b[20..];
    let (width, height) = match kind {
        b"VP8 " => {
            if data.len() < 10 {
                return Err(truncated);
            }
            if data[3..6] != [0x9d, 0x01, 0x2a] {
                return Err(ImagingError::corrupt(Format::Webp, "bad VP8 start code"));
            }
            let w = u32::from(u16::from_le_bytes([data[6], data[7]]) & 0x3fff);
            let h = u32::from(u16::from_le_bytes([data[8], data[9]]) & 0x3fff);
            (w, h)
        }
        b"VP8L" => {
            if data.len() < 5 {
                return Err(truncated);
            }
            if data[0] != 0x2f {
                return Err(ImagingError::corrupt(Format::Webp, "bad VP8L signature"));
            }
            let bits = le32(data, 1);
            ((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1)
        }
        b"VP8X" => {
            if data.len() < 10 {
                return Err(truncated);
            }
            (le24(data, 4) + 1, le24(data, 7) + 1)
        }
        _ => return Err(ImagingError::corrupt(Format::Webp, "unknown first chunk")),
    };
    let mut exif = None;
    if kind == b"VP8X" {
        let mut i = 12;
        while i + 8 <= b.len() {
            let len = le32(b, i + 4) as usize;
            let Some(data) = b.get(i + 8..(i + 8).saturating_add(len)) else {
                break;
            };
            if &b[i..i + 4] == b"EXIF" {
                // Some writers keep the JPEG-style prefix inside the chunk.
                exif = Some(data.strip_prefix(b"Exif\0\0").unwrap_or(data));
                break;
            }
            i = i.saturating_add(8).saturating_add(len + (len & 1));
        }
    }
    Ok(Container {
        width,
        height,
        exif,
    })
}

/// IFD0's Orientation tag, or 1 when the EXIF block is unreadable or the value is out
/// of range: a broken EXIF block must not make a photo undecodable. `tiff` is
/// the block after the `Exif\0\0` tag (a TIFF header and its IFDs).
pub fn orientation_from_exif(tiff: &[u8]) -> u8 {
    let Ok(exif) = exif::Reader::new().read_raw(tiff.to_vec()) else {
        return 1;
    };
    exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|field| field.value.get_uint(0))
        .and_then(|v| u8::try_from(v).ok())
        .filter(|v| (1..=8).contains(v))
        .unwrap_or(1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal big-endian TIFF block holding only IFD0 Orientation = `o`.
    pub(crate) fn exif_orientation_block(o: u16) -> Vec<u8> {
        let mut t = b"MM\0\x2a\0\0\0\x08".to_vec();
        t.extend_from_slice(&1u16.to_be_bytes()); // one entry
        t.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        t.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        t.extend_from_slice(&1u32.to_be_bytes()); // count
        t.extend_from_slice(&o.to_be_bytes());
        t.extend_from_slice(&[0, 0]); // value padding
        t.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        t
    }

    /// A PNG signature and IHDR only: enough for the header, no pixel data.
    pub(crate) fn png_ihdr_only(w: u32, h: u32) -> Vec<u8> {
        let mut b = PNG_SIGNATURE.to_vec();
        b.extend_from_slice(&13u32.to_be_bytes());
        b.extend_from_slice(b"IHDR");
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 2, 0, 0, 0]);
        b.extend_from_slice(&[0; 4]); // CRC, not checked by the header reader
        b
    }

    #[test]
    fn orientation_is_read_and_sanitised() {
        for o in 1..=8 {
            assert_eq!(orientation_from_exif(&exif_orientation_block(o)), o as u8);
        }
        assert_eq!(orientation_from_exif(&exif_orientation_block(0)), 1);
        assert_eq!(orientation_from_exif(&exif_orientation_block(9)), 1);
        assert_eq!(orientation_from_exif(b"garbage"), 1);
    }

    #[test]
    fn huge_png_header_is_refused_before_decoding() {
        let err = probe(&png_ihdr_only(50_000, 50_000), &Limits::default()).unwrap_err();
        assert!(matches!(
            err,
            ImagingError::TooManyPixels {
                width: 50_000,
                height: 50_000,
                ..
            }
        ));
        assert_eq!(err.code(), "too_many_pixels");
    }

    #[test]
    fn bytes_limit_is_checked_first() {
        let limits = Limits {
            max_bytes: 10,
            max_pixels: 1,
        };
        let err = probe(&png_ihdr_only(50_000, 50_000), &limits).unwrap_err();
        assert_eq!(err.code(), "image_too_large");
    }

    #[test]
    fn other_formats_are_named() {
        let err = probe(b"GIF89a....", &Limits::default()).unwrap_err();
        assert!(matches!(
            err,
            ImagingError::UnsupportedFormat { detected: "gif" }
        ));
        let err = probe(b"", &Limits::default()).unwrap_err();
        assert_eq!(err.code(), "unsupported_format");
    }

    #[test]
    fn zero_width_is_an_error_not_a_panic() {
        let err = probe(&png_ihdr_only(0, 10), &Limits::default()).unwrap_err();
        assert_eq!(err.code(), "empty_image");
    }
}
