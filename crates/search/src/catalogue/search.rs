//! Answering a query over the catalogue: the filter, the text scores, the
//! similar-photo walk, the facets and the sorted page with its cursor.

use super::counts::Counts;
use super::*;
use crate::query::{Cursor, Query, Sort};

/// A user's personal aesthetic head, for `sort=aesthetic`: photos rank by
/// `sigmoid(w · embedding + b)` (their similar-photo vector).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Personal<'a> {
    pub weights: &'a [f32],
    pub bias: f32,
}

impl Personal<'_> {
    fn margin(&self, v: &[f32]) -> f64 {
        self.weights
            .iter()
            .zip(v)
            .map(|(w, x)| f64::from(*w) * f64::from(*x))
            .sum::<f64>()
            + f64::from(self.bias)
    }
}

impl Catalogue {
    /// Answers `query`. `plan` is its text resolved by the lexicon (`None`
    /// when it has no text); `similar` the vector to rank by.
    pub fn search(
        &self,
        query: &Query,
        plan: Option<&TextPlan>,
        similar: Option<VectorSearch<'_>>,
    ) -> Result<Page, SearchError> {
        self.search_with(query, plan, similar, None)
    }

    /// [`Catalogue::search`], with the head `sort=aesthetic` ranks by.
    pub fn search_with(
        &self,
        query: &Query,
        plan: Option<&TextPlan>,
        similar: Option<VectorSearch<'_>>,
        personal: Option<Personal<'_>>,
    ) -> Result<Page, SearchError> {
        let filter = self.filter(query);
        let text = plan.map(|p| self.text_scores(p));
        let ranked = text.is_some() || similar.is_some();
        let min_score = query.min_score.unwrap_or(match (&similar, &text) {
            (Some(_), _) => DEFAULT_MIN_SIMILAR,
            (None, Some(_)) => DEFAULT_MIN_TEXT,
            (None, None) => 0.0,
        });
        // Every match, with its score.
        let mut matches: Vec<(u32, f32)> = match (&similar, &text) {
            (Some(v), _) => {
                let Some(index) = &self.vectors else {
                    return Ok(Page {
                        total: 0,
                        results: Vec::new(),
                        facets: self.facets(&Counts::default()),
                        next_cursor: None,
                    });
                };
                let keep = |node: u32| {
                    let Some(&slot) = self.node_slots.get(node as usize) else {
                        return false;
                    };
                    let Some(e) = self.slots.get(slot as usize).and_then(Option::as_ref) else {
                        return false;
                    };
                    filter.passes(e)
                        && v.exclude != Some(&*e.id)
                        && text.as_ref().is_none_or(|t| t.contains(slot))
                };
                index
                    .search_nodes(v.vector, v.depth, v.ef.max(v.depth), &keep)
                    .map_err(|e| SearchError::Internal(e.to_string()))?
                    .into_iter()
                    .map(|(node, sim)| (self.node_slots[node as usize], sim))
                    .collect()
            }
            (None, Some(scores)) => scores
                .matches
                .iter()
                .filter(|&&s| {
                    self.slots[s as usize]
                        .as_ref()
                        .is_some_and(|e| filter.passes(e))
                })
                .map(|&s| (s, scores.score[s as usize]))
                .collect(),
            (None, None) => self
                .candidates(&filter)
                .filter(|&s| {
                    self.slots[s as usize]
                        .as_ref()
                        .is_some_and(|e| filter.passes(e))
                })
                .map(|s| (s, 0.0))
                .collect(),
        };
        if ranked {
            matches.retain(|m| m.1 >= min_score);
        }
        let mut sample = None;
        let counts = if !ranked && filter.status_only() {
            let mut c = Counts::default();
            for st in &filter.statuses {
                if let Some(n) = self.counts.get(st) {
                    c.merge(n);
                }
            }
            c
        } else {
            let mut c = Counts {
                concepts: vec![0; self.terms.names.len()],
                ..Counts::default()
            };
            let stride = matches.len().div_ceil(FACET_SAMPLE).max(1);
            for &(s, _) in matches.iter().step_by(stride) {
                if let Some(e) = &self.slots[s as usize] {
                    c.add(e, 1);
                }
            }
            if stride > 1 {
                sample = Some(c.photos);
                c.scale_to(matches.len() as u64);
            }
            c
        };
        let sort = query.sort_for(ranked);
        let key = |slot: u32, score: f32| -> f64 {
            let e = self.slots[slot as usize].as_ref().expect("a live slot");
            match sort {
                Sort::Relevance => score as f64,
                Sort::Newest => e.created_ms as f64,
                Sort::Quality if e.quality.is_nan() => -1.0,
                Sort::Quality => e.quality as f64,
                // Finite, for the cursor: below any photo someone liked.
                Sort::Popular => (e.popular as f64).max(-1e30),
                Sort::Aesthetic => personal
                    .zip(self.vectors.as_ref().and_then(|v| v.vector(&e.id)))
                    .map_or(-1e30, |(p, v)| p.margin(v)),
            }
        };
        let seq_of = |slot: u32| self.slots[slot as usize].as_ref().map_or(0, |e| e.seq);
        let fingerprint = query.fingerprint(similar.is_some());
        let after = query
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(c, fingerprint))
            .transpose()?;
        // (key, seq, slot, score), the page's order: key descending, then
        // the later upload first.
        let mut keyed: Vec<(f64, i64, u32, f32)> = matches
            .iter()
            .map(|&(s, score)| (key(s, score), seq_of(s), s, score))
            .filter(|k| after.is_none_or(|c| k.0 < c.key || (k.0 == c.key && k.1 < c.seq)))
            .collect();
        let order = |a: &(f64, i64, u32, f32), b: &(f64, i64, u32, f32)| {
            b.0.total_cmp(&a.0).then(b.1.cmp(&a.1))
        };
        let want = query.limit + 1;
        if keyed.len() > want {
            keyed.select_nth_unstable_by(want - 1, order);
            keyed.truncate(want);
        }
        keyed.sort_by(order);
        let next_cursor = (keyed.len() > query.limit).then(|| {
            let last = keyed[query.limit - 1];
            Cursor {
                fingerprint,
                key: last.0,
                seq: last.1,
            }
            .encode()
        });
        keyed.truncate(query.limit);
        let results = keyed
            .iter()
            .map(|&(_, _, slot, score)| {
                let e = self.slots[slot as usize].as_ref().expect("a live slot");
                let mut concepts: Vec<(String, f32)> = e
                    .concepts()
                    .map(|t| (self.terms.names[t.0 as usize].clone(), t.1))
                    .collect();
                concepts.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                concepts.truncate(RESULT_CONCEPTS);
                let aesthetic = (sort == Sort::Aesthetic)
                    .then(|| {
                        let v = self.vectors.as_ref()?.vector(&e.id)?;
                        let p = personal?;
                        Some(domain::concept::linear_score(p.weights, p.bias, v))
                    })
                    .flatten();
                Hit {
                    id: e.id.to_string(),
                    score: ranked.then_some(score),
                    aesthetic,
                    concepts,
                    width: e.width,
                    height: e.height,
                }
            })
            .collect();
        Ok(Page {
            total: counts.photos,
            results,
            facets: Facets {
                sample,
                ..self.facets(&counts)
            },
            next_cursor,
        })
    }

    fn facets(&self, counts: &Counts) -> Facets {
        let mut concepts: Vec<(u32, u64)> = counts
            .concepts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(t, &n)| (t as u32, n))
            .collect();
        let by_count = |a: &(u32, u64), b: &(u32, u64)| {
            b.1.cmp(&a.1)
                .then_with(|| self.terms.names[a.0 as usize].cmp(&self.terms.names[b.0 as usize]))
        };
        if concepts.len() > FACET_CONCEPTS {
            concepts.select_nth_unstable_by(FACET_CONCEPTS - 1, by_count);
            concepts.truncate(FACET_CONCEPTS);
        }
        concepts.sort_by(by_count);
        Facets {
            concepts: concepts
                .into_iter()
                .map(|(t, n)| (self.terms.names[t as usize].clone(), n))
                .collect(),
            orientation: Orientation::ALL
                .iter()
                .zip(counts.orientation)
                .map(|(o, n)| (o.as_str(), n))
                .collect(),
            size: SizeClass::ALL
                .iter()
                .zip(counts.size)
                .map(|(s, n)| (s.as_str(), n))
                .collect(),
            sample: None,
        }
    }

    /// Per matching slot, the mean over the plan's units of the unit's best
    /// `weight × term score`; a slot must match every unit. Dense arrays
    /// over the slots, not maps: a broad word ("animal") matches half the
    /// catalogue, and a hash map per query costs several times more.
    fn text_scores(&self, plan: &TextPlan) -> TextScores {
        let n = self.slots.len();
        let units = plan.len();
        let mut sum = vec![0f32; n];
        let mut count = vec![0u16; n];
        let mut best = vec![f32::NAN; n];
        let mut touched: Vec<u32> = Vec::new();
        for (i, unit) in plan.iter().enumerate() {
            touched.clear();
            for &(term, weight) in unit {
                for &(slot, term_score) in &self.postings[term as usize] {
                    // Later units only narrow the earlier ones' matches.
                    if count[slot as usize] as usize != i {
                        continue;
                    }
                    let score = weight * term_score;
                    let b = &mut best[slot as usize];
                    if b.is_nan() {
                        touched.push(slot);
                        *b = score;
                    } else if score > *b {
                        *b = score;
                    }
                }
            }
            for &slot in &touched {
                let s = slot as usize;
                sum[s] += best[s];
                count[s] += 1;
                best[s] = f32::NAN;
            }
        }
        // The last unit's matches matched every unit before it.
        let matches = if units == 0 { Vec::new() } else { touched };
        for &slot in &matches {
            sum[slot as usize] /= units as f32;
        }
        TextScores {
            score: sum,
            count,
            units,
            matches,
        }
    }

    /// The slots worth checking: those of the rarest required concept, or all.
    fn candidates<'a>(&'a self, filter: &Filter) -> Box<dyn Iterator<Item = u32> + 'a> {
        match filter
            .concepts
            .iter()
            .min_by_key(|t| self.postings[**t as usize].len())
        {
            Some(&t) => Box::new(self.postings[t as usize].iter().map(|p| p.0)),
            None => Box::new(0..self.slots.len() as u32),
        }
    }

    fn filter(&self, q: &Query) -> Filter {
        let missing = |name: &str| self.terms.get(name).is_none();
        let unknown_uploader = q
            .uploader
            .as_deref()
            .is_some_and(|u| self.uploaders.get(&u.to_lowercase()).is_none());
        Filter {
            statuses: if q.statuses.is_empty() {
                vec![Status::Published]
            } else {
                q.statuses.clone()
            },
            concepts: q
                .concepts
                .iter()
                .filter_map(|c| self.terms.get(c))
                .collect(),
            orientations: q.orientations.clone(),
            sizes: q.sizes.clone(),
            uploader: q
                .uploader
                .as_deref()
                .and_then(|u| self.uploaders.get(&u.to_lowercase())),
            from_ms: q.from_ms,
            to_ms: q.to_ms,
            none: q.concepts.iter().any(|c| missing(c)) || unknown_uploader,
        }
    }
}

/// What a text plan matched: dense over the slots.
struct TextScores {
    /// The mean score, for the matches.
    score: Vec<f32>,
    /// Units matched, per slot.
    count: Vec<u16>,
    units: usize,
    matches: Vec<u32>,
}

impl TextScores {
    fn contains(&self, slot: u32) -> bool {
        self.units > 0 && self.count[slot as usize] as usize == self.units
    }
}

/// A query's conditions on a photo's facts.
struct Filter {
    statuses: Vec<Status>,
    concepts: Vec<u32>,
    orientations: Vec<Orientation>,
    sizes: Vec<SizeClass>,
    uploader: Option<u32>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    /// A required concept or uploader no photo has: nothing matches.
    none: bool,
}

impl Filter {
    fn passes(&self, e: &Entry) -> bool {
        !self.none
            && self.statuses.contains(&e.status)
            && (self.orientations.is_empty() || self.orientations.contains(&e.orientation()))
            && (self.sizes.is_empty() || self.sizes.contains(&e.size()))
            && self.uploader.is_none_or(|u| u == e.uploader)
            && self.from_ms.is_none_or(|t| e.created_ms >= t)
            && self.to_ms.is_none_or(|t| e.created_ms < t)
            && self.concepts.iter().all(|&t| e.score_of(t).is_some())
    }

    /// No condition beyond the status: the kept counts answer the facets.
    fn status_only(&self) -> bool {
        !self.none
            && self.concepts.is_empty()
            && self.orientations.is_empty()
            && self.sizes.is_empty()
            && self.uploader.is_none()
            && self.from_ms.is_none()
            && self.to_ms.is_none()
    }
}
