//! Mutations of real files: bit flips, extreme bytes, truncations, inserted
//! junk, and, knowing each format's framing, chunk and segment shuffles and
//! length fields set to extremes.

use std::ops::Range;

use crate::rng::Rng;

/// A length field inside a file: where it sits, how wide, which byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthField {
    pub at: usize,
    pub width: usize,
    pub big_endian: bool,
}

/// One unit of a file's framing: a JPEG marker segment (or the entropy-coded
/// rest), a PNG chunk, a RIFF chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub range: Range<usize>,
    pub length: Option<LengthField>,
}

/// The framing of `b`: JPEG segments up to the scan, then the scan; PNG
/// chunks; WebP RIFF chunks. Empty for anything else, or where the framing
/// stops adding up.
pub fn chunks(b: &[u8]) -> Vec<Chunk> {
    if b.starts_with(&[0xFF, 0xD8]) {
        jpeg_chunks(b)
    } else if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        png_chunks(b)
    } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        riff_chunks(b)
    } else {
        Vec::new()
    }
}

fn jpeg_chunks(b: &[u8]) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut i = 2;
    while i + 4 <= b.len() && b[i] == 0xFF {
        let code = b[i + 1];
        if code == 0xDA || matches!(code, 0xD0..=0xD9 | 0x01) {
            // The scan and whatever follows it: one unit.
            out.push(Chunk {
                range: i..b.len(),
                length: None,
            });
            break;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        let end = (i + 2 + len).min(b.len());
        out.push(Chunk {
            range: i..end,
            length: Some(LengthField {
                at: i + 2,
                width: 2,
                big_endian: true,
            }),
        });
        if len < 2 {
            break;
        }
        i = end;
    }
    out
}

fn png_chunks(b: &[u8]) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut i = 8;
    while i + 12 <= b.len() {
        let len = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let end = i.saturating_add(12).saturating_add(len).min(b.len());
        out.push(Chunk {
            range: i..end,
            length: Some(LengthField {
                at: i,
                width: 4,
                big_endian: true,
            }),
        });
        i = end;
    }
    out
}

fn riff_chunks(b: &[u8]) -> Vec<Chunk> {
    let mut out = vec![Chunk {
        range: 0..12,
        length: Some(LengthField {
            at: 4,
            width: 4,
            big_endian: false,
        }),
    }];
    let mut i = 12;
    while i + 8 <= b.len() {
        let len = u32::from_le_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]) as usize;
        let padded = len.saturating_add(len & 1);
        let end = i.saturating_add(8).saturating_add(padded).min(b.len());
        out.push(Chunk {
            range: i..end,
            length: Some(LengthField {
                at: i + 4,
                width: 4,
                big_endian: false,
            }),
        });
        i = end;
    }
    out
}

/// The kinds of mutation, for the report.
pub const KINDS: [&str; 9] = [
    "bit_flip",
    "extreme_byte",
    "truncate",
    "insert",
    "swap_chunks",
    "duplicate_chunk",
    "drop_chunk",
    "length_extreme",
    "splice",
];

/// Applies one to three mutations to `input`; `other` is a second real file
/// for splicing. Returns the mutated bytes and the kinds applied.
pub fn mutate(input: &[u8], other: &[u8], rng: &mut Rng) -> (Vec<u8>, Vec<&'static str>) {
    let mut b = input.to_vec();
    let mut applied = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let kind = rng.below(KINDS.len());
        if apply(kind, &mut b, other, rng) {
            applied.push(KINDS[kind]);
        }
    }
    (b, applied)
}

/// A position, half the time within the first 2 KiB, where headers are.
fn position(len: usize, rng: &mut Rng) -> usize {
    if len == 0 {
        return 0;
    }
    if rng.chance(1, 2) {
        rng.below(len.min(2048))
    } else {
        rng.below(len)
    }
}

fn apply(kind: usize, b: &mut Vec<u8>, other: &[u8], rng: &mut Rng) -> bool {
    match kind {
        0 if !b.is_empty() => {
            for _ in 0..1 + rng.below(8) {
                let at = position(b.len(), rng);
                b[at] ^= 1 << rng.below(8);
            }
            true
        }
        1 if !b.is_empty() => {
            for _ in 0..1 + rng.below(4) {
                let at = position(b.len(), rng);
                b[at] = *rng.pick(&[0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE]);
            }
            true
        }
        2 if !b.is_empty() => {
            b.truncate(rng.below(b.len()));
            true
        }
        3 => {
            let at = position(b.len() + 1, rng).min(b.len());
            let n = 1 + rng.below(64);
            let junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            b.splice(at..at, junk);
            true
        }
        4..=6 => {
            let chunks = chunks(b);
            if chunks.len() < 2 {
                return false;
            }
            let first = rng.below(chunks.len());
            let a = chunks[first].range.clone();
            match kind {
                4 => {
                    let second = rng.below(chunks.len());
                    let c = chunks[second].range.clone();
                    if a == c || a.end > c.start && c.end > a.start {
                        return false;
                    }
                    let (lo, hi) = if a.start < c.start { (a, c) } else { (c, a) };
                    let mut out = b[..lo.start].to_vec();
                    out.extend_from_slice(&b[hi.clone()]);
                    out.extend_from_slice(&b[lo.end..hi.start]);
                    out.extend_from_slice(&b[lo.clone()]);
                    out.extend_from_slice(&b[hi.end..]);
                    *b = out;
                }
                5 => {
                    let copy = b[a.clone()].to_vec();
                    b.splice(a.end..a.end, copy);
                }
                _ => {
                    b.drain(a);
                }
            }
            true
        }
        7 => {
            let fields: Vec<LengthField> = chunks(b).iter().filter_map(|c| c.length).collect();
            if fields.is_empty() {
                return false;
            }
            let f = *rng.pick(&fields);
            if f.at + f.width > b.len() {
                return false;
            }
            let max = if f.width == 2 {
                u64::from(u16::MAX)
            } else {
                u64::from(u32::MAX)
            };
            let current = read(b, f);
            let value = match rng.below(7) {
                0 => 0,
                1 => 1,
                2 => max,
                3 => max / 2 + 1,
                4 => current.saturating_add(1).min(max),
                5 => current.saturating_sub(1),
                _ => current.saturating_mul(2).min(max),
            };
            write(b, f, value);
            true
        }
        8 if !other.is_empty() && !b.is_empty() => {
            let from = rng.below(other.len());
            let n = 1 + rng.below((other.len() - from).min(4096));
            let at = position(b.len(), rng);
            let end = (at + n).min(b.len());
            b.splice(at..end, other[from..from + n].iter().copied());
            true
        }
        _ => false,
    }
}

fn read(b: &[u8], f: LengthField) -> u64 {
    let bytes = &b[f.at..f.at + f.width];
    let mut v = 0u64;
    for i in 0..f.width {
        let byte = if f.big_endian {
            bytes[i]
        } else {
            bytes[f.width - 1 - i]
        };
        v = (v << 8) | u64::from(byte);
    }
    v
}

fn write(b: &mut [u8], f: LengthField, v: u64) {
    for i in 0..f.width {
        let shift = 8 * if f.big_endian { f.width - 1 - i } else { i };
        b[f.at + i] = (v >> shift) as u8;
    }
}

/// Mutations of a text (a query string, a JSON body): the byte mutations,
/// plus tokens that parsers trip on spliced in.
pub fn mutate_text(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    const TOKENS: [&str; 16] = [
        "4294967296",
        "-1",
        "0",
        "18446744073709551616",
        "1e309",
        "NaN",
        "%",
        "%FF",
        "&&",
        "==",
        "\"",
        "\\u0000",
        "{",
        "]",
        "null",
        "\u{1F600}",
    ];
    if rng.chance(1, 2) {
        let mut b = input.to_vec();
        let at = position(b.len() + 1, rng).min(b.len());
        let end = (at + rng.below(8)).min(b.len());
        b.splice(at..end, rng.pick(&TOKENS).bytes());
        b
    } else {
        mutate(input, &[], rng).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_chunks_are_found_with_their_lengths() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        for (ty, data) in [(&b"IHDR"[..], &[0u8; 13][..]), (b"IEND", &[])] {
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            png.extend_from_slice(ty);
            png.extend_from_slice(data);
            png.extend_from_slice(&[0; 4]);
        }
        let c = chunks(&png);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].range, 8..33);
        assert_eq!(c[1].range, 33..45);
        let f = c[0].length.unwrap();
        assert_eq!(read(&png, f), 13);
        write(&mut png, f, 0xFFFF_FFFF);
        assert_eq!(&png[8..12], &[0xFF; 4]);
    }

    #[test]
    fn the_same_case_mutates_the_same_way() {
        let input: Vec<u8> = (0..=255).collect();
        let a = mutate(&input, &input, &mut Rng::for_case(7, 3));
        let b = mutate(&input, &input, &mut Rng::for_case(7, 3));
        assert_eq!(a, b);
        assert_ne!(a.0, mutate(&input, &input, &mut Rng::for_case(7, 4)).0);
    }
}
