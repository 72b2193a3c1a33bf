//! Is the file whole? Cheap structural checks that let an upload be refused
//! at once (422) instead of being accepted and failing in a worker later.
//!
//! - JPEG: the segments are walked by their lengths and the entropy-coded
//!   data scanned for the next marker, until the end-of-image marker (a
//!   file that lacks only that marker is refused too: the decoder reports
//!   "Premature end of JPEG file" for it, so it would fail later). An
//!   EXIF thumbnail's own end marker sits inside its APP1 segment and is
//!   skipped with it; data after the end marker (a motion photo's video,
//!   MPF pictures) is allowed.
//! - PNG: the IHDR chunk's CRC must match, and the chunks, skipped by
//!   length, must run to IEND inside the file.
//! - WebP: the RIFF size must fit inside the file.
//!
//! One pass looking for 0xFF over a JPEG (memchr), one step per chunk
//! otherwise. Damage inside the compressed data is still the decoder's to
//! find.

use crate::error::ImagingError;
use crate::probe::{sniff, Format};

/// Checks that `bytes` hold a whole JPEG, PNG or WebP file: `Truncated`
/// when it ends early, `Corrupt` when its structure is broken.
pub fn check_complete(bytes: &[u8]) -> Result<(), ImagingError> {
    match sniff(bytes)? {
        Format::Jpeg => jpeg(bytes),
        Format::Png => png(bytes),
        Format::Webp => webp(bytes),
    }
}

fn truncated(format: Format) -> ImagingError {
    ImagingError::Truncated { format }
}

fn jpeg(b: &[u8]) -> Result<(), ImagingError> {
    let mut i = 2; // after SOI
    loop {
        // The next marker: skip stray bytes, then fill bytes (0xFF runs).
        i += memchr::memchr(0xFF, &b[i.min(b.len())..]).ok_or(truncated(Format::Jpeg))?;
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let code = *b.get(i).ok_or(truncated(Format::Jpeg))?;
        i += 1;
        match code {
            0xD9 => return Ok(()),
            // Stand-alone markers (and a stray stuffed zero): no length.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let len = match b.get(i..i + 2) {
            Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]])),
            None => return Err(truncated(Format::Jpeg)),
        };
        if len < 2 {
            return Err(ImagingError::corrupt(
                Format::Jpeg,
                "segment length below 2",
            ));
        }
        if i + len > b.len() {
            return Err(truncated(Format::Jpeg));
        }
        i += len;
        if code == 0xDA {
            i = after_entropy_data(b, i)?;
        }
    }
}

/// From the start of a scan's entropy-coded data, the position of the next
/// real marker's 0xFF: stuffed zeros (FF 00) and restart markers (FF D0-D7)
/// belong to the data.
fn after_entropy_data(b: &[u8], mut i: usize) -> Result<usize, ImagingError> {
    loop {
        let at = i + memchr::memchr(0xFF, &b[i.min(b.len())..]).ok_or(truncated(Format::Jpeg))?;
        let mut next = at + 1;
        while b.get(next) == Some(&0xFF) {
            next += 1;
        }
        match b.get(next) {
            None => return Err(truncated(Format::Jpeg)),
            Some(0x00 | 0xD0..=0xD7) => i = next + 1,
            Some(_) => return Ok(at),
        }
    }
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

fn png(b: &[u8]) -> Result<(), ImagingError> {
    // Signature (8), then IHDR: length (4), type (4), data (13), CRC (4).
    let Some(ihdr) = b.get(8..33) else {
        return Err(truncated(Format::Png));
    };
    if &ihdr[4..8] != b"IHDR" || be32(ihdr, 0) != 13 {
        return Err(ImagingError::corrupt(
            Format::Png,
            "first chunk is not IHDR",
        ));
    }
    if crc32(&ihdr[4..21]) != be32(ihdr, 21) as u32 {
        return Err(ImagingError::corrupt(
            Format::Png,
            "the IHDR chunk's CRC does not match",
        ));
    }
    let mut i = 33;
    while i + 8 <= b.len() {
        let end = i.saturating_add(12).saturating_add(be32(b, i));
        if end > b.len() {
            return Err(truncated(Format::Png));
        }
        if &b[i + 4..i + 8] == b"IEND" {
            return Ok(());
        }
        i = end;
    }
    Err(truncated(Format::Png))
}

/// `sniff` has seen `RIFF....WEBP`: at least 12 bytes.
fn webp(b: &[u8]) -> Result<(), ImagingError> {
    let size = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
    if size < 4 {
        return Err(ImagingError::corrupt(Format::Webp, "RIFF size below 4"));
    }
    if size > b.len() - 8 {
        return Err(truncated(Format::Webp));
    }
    Ok(())
}

/// The CRC-32 PNG uses (ISO-HDLC), bit by bit: it only ever sees IHDR's
/// 17 bytes.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, OutputFormat, RgbImage};

    /// A noisy photo, so the JPEG has real entropy-coded data with stuffed
    /// zeros in it.
    fn photo(format: OutputFormat) -> Vec<u8> {
        let mut image = RgbImage::filled(96, 64, [0, 0, 0]);
        let mut seed = 7u32;
        for px in image.data.iter_mut() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *px = (seed >> 16) as u8;
        }
        encode(&image, format, 90).unwrap()
    }

    fn code(r: Result<(), ImagingError>) -> &'static str {
        r.map_or_else(|e| e.code(), |_| "ok")
    }

    #[test]
    fn whole_files_pass_and_cut_ones_are_truncated() {
        for format in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp] {
            let whole = photo(format);
            assert_eq!(code(check_complete(&whole)), "ok", "{format:?}");
            for cut in [whole.len() - 1, whole.len() / 2, 40] {
                assert_eq!(
                    code(check_complete(&whole[..cut])),
                    "truncated_image",
                    "{format:?} cut at {cut} of {}",
                    whole.len()
                );
            }
        }
    }

    #[test]
    fn a_jpeg_is_whole_at_its_own_end_marker_not_a_thumbnails() {
        let main = photo(OutputFormat::Jpeg);
        let thumbnail = photo(OutputFormat::Jpeg);
        // SOI, an APP1 segment carrying a whole JPEG (its FF D9 inside),
        // then the rest of the main photo.
        let mut with_thumbnail = main[..2].to_vec();
        with_thumbnail.extend_from_slice(&[0xFF, 0xE1]);
        with_thumbnail.extend_from_slice(&((thumbnail.len() + 2) as u16).to_be_bytes());
        with_thumbnail.extend_from_slice(&thumbnail);
        with_thumbnail.extend_from_slice(&main[2..]);
        assert_eq!(code(check_complete(&with_thumbnail)), "ok");
        let cut = &with_thumbnail[..2 + 4 + thumbnail.len() + 100];
        assert_eq!(code(check_complete(cut)), "truncated_image");
        // Bytes after the end marker (a motion photo's video) are fine.
        let mut trailing = main.clone();
        trailing.extend_from_slice(b"\0\0\0\x18ftypmp42 and a video");
        assert_eq!(code(check_complete(&trailing)), "ok");
    }

    #[test]
    fn a_png_with_a_broken_header_chunk_is_corrupt() {
        let mut png = photo(OutputFormat::Png);
        png[19] ^= 0x01; // the low bit of the width, under IHDR's CRC
        assert_eq!(code(check_complete(&png)), "corrupt_image");
    }

    #[test]
    fn the_crc_is_pngs() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }
}
