use super::*;
use crate::query::Query;

fn doc(i: usize, uploader: &str, terms: &[(&str, f32)]) -> Doc {
    Doc {
        id: format!("p{i}"),
        seq: i as i64,
        created_ms: 1000 * i as i64,
        status: Status::Published,
        uploader: Some(uploader.into()),
        width: if i.is_multiple_of(2) { 1920 } else { 800 },
        height: 1080,
        quality: Some(i as f32 / 10.0),
        popular: f32::NEG_INFINITY,
        terms: terms
            .iter()
            .map(|(t, s)| (t.to_string(), *s, TermKind::Concept))
            .collect(),
    }
}

fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.05; 8];
    v[i % 8] = 1.0;
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn query(pairs: &[(&str, &str)]) -> Query {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Query::parse(&pairs).unwrap()
}

fn ids(page: &Page) -> Vec<&str> {
    page.results.iter().map(|h| h.id.as_str()).collect()
}

#[test]
fn listings_facets_cursors_and_filtered_vectors_agree() {
    let mut c = Catalogue::new(None);
    for i in 1..=6 {
        let who = if i <= 3 { "ann" } else { "bo" };
        c.upsert(&doc(i, who, &[("sky", 0.9), ("sea", 0.1 * i as f32)]));
        c.upsert_vector(&format!("p{i}"), "m", &unit(i)).unwrap();
    }
    // Newest first; the kept counts (no filter) equal counting them.
    let all = c.search(&query(&[]), None, None).unwrap();
    assert_eq!(ids(&all), ["p6", "p5", "p4", "p3", "p2", "p1"]);
    let counted = c
        .search(&query(&[("from", "0")]), None, None)
        .unwrap()
        .facets;
    assert_eq!(all.facets, counted);
    assert_eq!(
        all.facets.concepts,
        [("sea".to_string(), 6), ("sky".to_string(), 6)]
    );
    // Best quality first, two at a time, to the end.
    let q = query(&[("sort", "quality"), ("limit", "4")]);
    let first = c.search(&q, None, None).unwrap();
    let mut q2 = q.clone();
    q2.cursor = first.next_cursor.clone();
    let second = c.search(&q2, None, None).unwrap();
    assert_eq!(
        [ids(&first), ids(&second)].concat(),
        ["p6", "p5", "p4", "p3", "p2", "p1"]
    );
    assert!(second.next_cursor.is_none());
    // Similar to p1's vector, only bo's photos, p1 itself left out.
    let v = c.vector_of("p1").unwrap().to_vec();
    let similar = VectorSearch {
        vector: &v,
        exclude: Some("p1"),
        depth: 10,
        ef: 16,
    };
    let page = c
        .search(
            &query(&[("uploader", "bo"), ("minScore", "0")]),
            None,
            Some(similar),
        )
        .unwrap();
    assert_eq!(page.total, 3);
    assert!(ids(&page).iter().all(|id| ["p4", "p5", "p6"].contains(id)));
    // Gone, then back with another vector: found under the new one.
    assert!(c.remove("p4"));
    c.upsert(&doc(4, "bo", &[("sky", 0.9)]));
    c.upsert_vector("p4", "m", &unit(1)).unwrap();
    let page = c
        .search(
            &query(&[("uploader", "bo"), ("minScore", "0.9")]),
            None,
            Some(similar),
        )
        .unwrap();
    assert_eq!(ids(&page), ["p4"]);
    // A snapshot round trip keeps all of it.
    let mut bytes = Vec::new();
    crate::snapshot::write(&c, "log", &mut bytes).unwrap();
    let (back, log) = crate::snapshot::read(&mut &bytes[..]).unwrap();
    assert_eq!(log, "log");
    let again = back
        .search(
            &query(&[("uploader", "bo"), ("minScore", "0.9")]),
            None,
            Some(similar),
        )
        .unwrap();
    assert_eq!(ids(&again), ["p4"]);
    assert_eq!(
        back.search(&query(&[]), None, None).unwrap(),
        c.search(&query(&[]), None, None).unwrap()
    );
}

#[test]
fn facets_past_the_sample_size_are_estimated_and_the_total_stays_exact() {
    let mut c = Catalogue::new(None);
    let n = 2 * FACET_SAMPLE + 1_000;
    for i in 1..=n {
        // Every photo is sky; one in 4 also sea; one in 2 is widescreen.
        let terms: &[(&str, f32)] = if i.is_multiple_of(4) {
            &[("sky", 0.9), ("sea", 0.5)]
        } else {
            &[("sky", 0.9)]
        };
        c.upsert(&doc(i, "ann", terms));
    }
    // A filter beyond the status: the facets are counted, over a sample.
    let page = c.search(&query(&[("from", "0")]), None, None).unwrap();
    assert_eq!(page.total, n as u64);
    let sample = page.facets.sample.expect("counted over a sample");
    assert!(sample <= FACET_SAMPLE as u64 && sample > FACET_SAMPLE as u64 / 2);
    let count = |name: &str| {
        page.facets
            .concepts
            .iter()
            .find(|c| c.0 == name)
            .map_or(0, |c| c.1)
    };
    assert_eq!(count("sky"), n as u64);
    let sea = count("sea") as f64 / (n / 4) as f64;
    assert!(
        (0.97..1.03).contains(&sea),
        "sea estimated at {sea} of the truth"
    );
    let wide = page
        .facets
        .orientation
        .iter()
        .find(|o| o.0 == "widescreen")
        .unwrap()
        .1;
    assert!((wide as f64 / (n / 2) as f64 - 1.0).abs() < 0.03);
    // A narrower query is counted exactly.
    let few = c
        .search(&query(&[("from", "0"), ("to", "5000000")]), None, None)
        .unwrap();
    assert_eq!(few.facets.sample, None);
    assert_eq!(few.total, 4_999);
}

#[test]
fn backfilled_scores_in_bulk_equal_the_same_scores_merged_per_photo() {
    use crate::trained::{merge, Trained};
    let docs: Vec<Doc> = (1..=40)
        .map(|i| {
            let mut d = doc(i, "ann", &[("sky", 0.9), ("sunset", 0.3 + 0.01 * i as f32)]);
            if i.is_multiple_of(5) {
                d.terms.push(("sunset".into(), 1.0, TermKind::Keyword));
                d.terms.remove(1);
            }
            d
        })
        .collect();
    // Version 2 is active with threshold 0.5; a few photos were scored by
    // version 1 only (not the truth any more), the rest by version 2.
    let trained = Trained::from_active([("sunset".to_string(), (2, 0.5))]);
    let score = |i: usize| {
        (
            if i.is_multiple_of(7) { 1 } else { 2 },
            (i as f32 * 0.37) % 1.0,
        )
    };
    let mut bulk = Catalogue::new(None);
    let mut merged = Catalogue::new(None);
    for (i, d) in docs.iter().enumerate().map(|(i, d)| (i + 1, d)) {
        bulk.upsert(d);
        let mut d = d.clone();
        let (version, s) = score(i);
        merge(&mut d, &[("sunset".into(), version, s)], &trained);
        merged.upsert(&d);
    }
    let verdicts: Vec<(String, Option<f32>)> = (1..=40)
        .filter(|&i| score(i).0 == 2)
        .map(|i| (format!("p{i}"), Some(score(i).1).filter(|s| *s >= 0.5)))
        .chain([("not-here".to_string(), Some(0.9))])
        .collect();
    assert!(bulk.set_trained("sunset", &verdicts) > 0);
    assert_eq!(bulk.set_trained("sunset", &verdicts), 0, "idempotent");
    for pairs in [
        vec![],
        vec![("concept", "sunset")],
        vec![("q", "sunset")],
        vec![("q", "sunset"), ("limit", "100")],
        vec![("from", "0")],
    ] {
        let q = query(&pairs);
        let plan = (!q.text.is_empty()).then(|| {
            crate::text::plan(&q.text, &bulk, &crate::text::Lexicon::empty(), None)
                .unwrap()
                .0
        });
        assert_eq!(
            bulk.search(&q, plan.as_ref(), None).unwrap(),
            merged.search(&q, plan.as_ref(), None).unwrap(),
            "{pairs:?}"
        );
    }
    let holders = bulk.concept_holders("sunset");
    assert!(
        !holders.is_empty() && !holders.contains(&"p5".to_string()),
        "a kept keyword is no concept"
    );
}

#[test]
fn sort_popular_ranks_by_likes_and_pages_with_its_cursor() {
    use domain::feedback::{Popularity, Signal};
    let mut c = Catalogue::new(None);
    let now = 1_800_000_000_000;
    let day = 86_400_000;
    for i in 1..=5 {
        let mut d = doc(i, "ann", &[("sky", 0.9)]);
        // p3 liked today, p1 picked a month ago, p5 liked a week ago; the
        // others never.
        let signals: Vec<(Signal, i64)> = match i {
            3 => vec![(Signal::Like, now), (Signal::Like, now)],
            1 => vec![(Signal::Pick, now - 30 * day)],
            5 => vec![(Signal::Like, now - 7 * day), (Signal::Dislike, now)],
            _ => vec![],
        };
        d.popular = Popularity::of(signals).0 as f32;
        c.upsert(&d);
    }
    let first = c
        .search(&query(&[("sort", "popular"), ("limit", "2")]), None, None)
        .unwrap();
    assert_eq!(ids(&first), ["p3", "p5"]);
    let cursor = first.next_cursor.clone().unwrap();
    let rest = c
        .search(
            &query(&[("sort", "popular"), ("limit", "10"), ("cursor", &cursor)]),
            None,
            None,
        )
        .unwrap();
    // Never liked: newest upload first among equals.
    assert_eq!(ids(&rest), ["p1", "p4", "p2"]);
    // Feedback changes it in place.
    let picked = Popularity::of([(Signal::Pick, now), (Signal::Pick, now)]);
    assert!(c.set_popular("p2", picked.0 as f32));
    let again = c
        .search(&query(&[("sort", "popular")]), None, None)
        .unwrap();
    assert_eq!(ids(&again)[0], "p2");
    assert!(!c.set_popular("nope", 0.0));
}
