//! Counts over a set of photos: the facets of a query, and the per-status
//! counts the catalogue keeps as photos come and go.

use crate::query::{Orientation, SizeClass};

use super::Entry;

/// Counts over a set of photos.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counts {
    pub(crate) photos: u64,
    /// By concept term id (grown on demand).
    pub(crate) concepts: Vec<u64>,
    pub(crate) orientation: [u64; 5],
    pub(crate) size: [u64; 3],
}

impl Counts {
    pub(crate) fn add(&mut self, e: &Entry, sign: i64) {
        let bump = |n: &mut u64| *n = n.wrapping_add_signed(sign);
        bump(&mut self.photos);
        for t in e.concepts() {
            let t = t.0 as usize;
            if self.concepts.len() <= t {
                self.concepts.resize(t + 1, 0);
            }
            bump(&mut self.concepts[t]);
        }
        bump(&mut self.orientation[orientation_index(e.orientation())]);
        bump(&mut self.size[size_index(e.size())]);
    }

    /// One photo more (`sign` 1) or fewer (-1) holding the concept `term`.
    pub(crate) fn bump_concept(&mut self, term: u32, sign: i64) {
        let t = term as usize;
        if self.concepts.len() <= t {
            self.concepts.resize(t + 1, 0);
        }
        self.concepts[t] = self.concepts[t].wrapping_add_signed(sign);
    }

    /// Counts taken over a sample, scaled to `total` photos (rounded; the
    /// photo count becomes `total` exactly).
    pub(crate) fn scale_to(&mut self, total: u64) {
        if self.photos == 0 {
            return;
        }
        let factor = total as f64 / self.photos as f64;
        let scale = |n: &mut u64| *n = (*n as f64 * factor).round() as u64;
        self.concepts.iter_mut().for_each(scale);
        self.orientation.iter_mut().for_each(scale);
        self.size.iter_mut().for_each(scale);
        self.photos = total;
    }

    pub(crate) fn merge(&mut self, other: &Counts) {
        self.photos += other.photos;
        if self.concepts.len() < other.concepts.len() {
            self.concepts.resize(other.concepts.len(), 0);
        }
        for (a, b) in self.concepts.iter_mut().zip(&other.concepts) {
            *a += b;
        }
        for i in 0..5 {
            self.orientation[i] += other.orientation[i];
        }
        for i in 0..3 {
            self.size[i] += other.size[i];
        }
    }
}

fn orientation_index(o: Orientation) -> usize {
    Orientation::ALL.iter().position(|x| *x == o).unwrap_or(0)
}

fn size_index(s: SizeClass) -> usize {
    SizeClass::ALL.iter().position(|x| *x == s).unwrap_or(0)
}
