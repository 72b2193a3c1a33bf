//! EXIF orientation, applied exactly as PIL's `ImageOps.exif_transpose` does.

use crate::RgbImage;

/// Returns `img` turned upright for EXIF `orientation` (1..=8; anything else is 1).
///
/// Orientation 1 hands the buffer back untouched; flips and 180° work row by row;
/// the four axis-swapping cases walk the output in tiles so that both the reads and
/// the writes stay in cache on camera-sized images.
pub fn apply_orientation(img: RgbImage, orientation: u8) -> RgbImage {
    let (w, h) = (img.width as usize, img.height as usize);
    match orientation {
        2 => {
            let mut img = img;
            for row in img.data.chunks_exact_mut(w * 3) {
                mirror_row(row);
            }
            img
        }
        3 => {
            let mut img = img;
            for row in img.data.chunks_exact_mut(w * 3) {
                mirror_row(row);
            }
            flip_rows(&mut img.data, w * 3);
            img
        }
        4 => {
            let mut img = img;
            flip_rows(&mut img.data, w * 3);
            img
        }
        5..=8 => {
            // Output is h wide and w tall; `src(x, y)` gives the stored pixel shown at (x, y).
            let src: fn(usize, usize, usize, usize) -> (usize, usize) = match orientation {
                5 => |x, y, _w, _h| (y, x),               // transpose
                6 => |x, y, _w, h| (y, h - 1 - x),        // rotate 90° clockwise
                7 => |x, y, w, h| (w - 1 - y, h - 1 - x), // transverse
                _ => |x, y, w, _h| (w - 1 - y, x),        // rotate 90° counter-clockwise
            };
            let (ow, oh) = (h, w);
            let mut out = vec![0u8; img.data.len()];
            const TILE: usize = 32;
            for ty in (0..oh).step_by(TILE) {
                for tx in (0..ow).step_by(TILE) {
                    for y in ty..(ty + TILE).min(oh) {
                        for x in tx..(tx + TILE).min(ow) {
                            let (sx, sy) = src(x, y, w, h);
                            let s = (sy * w + sx) * 3;
                            let d = (y * ow + x) * 3;
                            out[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
                        }
                    }
                }
            }
            RgbImage {
                width: ow as u32,
                height: oh as u32,
                data: out,
            }
        }
        _ => img,
    }
}

fn mirror_row(row: &mut [u8]) {
    let n = row.len() / 3;
    for i in 0..n / 2 {
        let (a, b) = (i * 3, (n - 1 - i) * 3);
        for c in 0..3 {
            row.swap(a + c, b + c);
        }
    }
}

fn flip_rows(data: &mut [u8], stride: usize) {
    let rows = data.len() / stride;
    for i in 0..rows / 2 {
        let (top, bottom) = data.split_at_mut((rows - 1 - i) * stride);
        top[i * stride..(i + 1) * stride].swap_with_slice(&mut bottom[..stride]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PIL 11.3 `ImageOps.exif_transpose` of the 3×2 image [[0,1,2],[3,4,5]] for each
    /// orientation (printed by Pillow; see the crate's parity notes).
    const PIL: [(u8, (u32, u32), [u8; 6]); 8] = [
        (1, (3, 2), [0, 1, 2, 3, 4, 5]),
        (2, (3, 2), [2, 1, 0, 5, 4, 3]),
        (3, (3, 2), [5, 4, 3, 2, 1, 0]),
        (4, (3, 2), [3, 4, 5, 0, 1, 2]),
        (5, (2, 3), [0, 3, 1, 4, 2, 5]),
        (6, (2, 3), [3, 0, 4, 1, 5, 2]),
        (7, (2, 3), [5, 2, 4, 1, 3, 0]),
        (8, (2, 3), [2, 5, 1, 4, 0, 3]),
    ];

    fn synthetic() -> RgbImage {
        // Each pixel's three channels differ so a channel mix-up would show.
        let data = (0u8..6).flat_map(|v| [v, v + 100, v + 200]).collect();
        RgbImage {
            width: 3,
            height: 2,
            data,
        }
    }

    #[test]
    fn every_orientation_matches_pil() {
        for (o, (w, h), expected) in PIL {
            let out = apply_orientation(synthetic(), o);
            assert_eq!((out.width, out.height), (w, h), "orientation {o}");
            let got: Vec<u8> = out.data.chunks_exact(3).map(|p| p[0]).collect();
            assert_eq!(got, expected, "orientation {o}");
            for p in out.data.chunks_exact(3) {
                assert_eq!((p[1], p[2]), (p[0] + 100, p[0] + 200));
            }
        }
    }

    #[test]
    fn invalid_orientation_is_identity() {
        assert_eq!(apply_orientation(synthetic(), 0), synthetic());
        assert_eq!(apply_orientation(synthetic(), 9), synthetic());
    }

    #[test]
    fn tiles_cover_images_larger_than_one_tile() {
        let (w, h) = (70usize, 45usize);
        let data = (0..w * h)
            .flat_map(|i| {
                let v = (i % 251) as u8;
                [v, v, v]
            })
            .collect();
        let img = RgbImage {
            width: w as u32,
            height: h as u32,
            data,
        };
        // Rotating clockwise then counter-clockwise is the identity.
        let back = apply_orientation(apply_orientation(img.clone(), 6), 8);
        assert_eq!(back, img);
        let back = apply_orientation(apply_orientation(img.clone(), 7), 7);
        assert_eq!(back, img);
    }
}
