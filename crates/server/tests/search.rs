//! `GET /v1/search` and `POST /v1/search/similar` over HTTP with the real
//! models, on real photos uploaded and analysed by the workers: text
//! (WordNet hyponyms, plurals), similar photos, every filter, facets,
//! cursors, bad input; the catalogue kept current from the event log and
//! loaded from its snapshot after a restart. Once embedded (SQLite, a
//! snapshot file) and once scaled out (PostgreSQL, NATS JetStream, moto;
//! an API-only replica follows the event stream, and a new one loads the
//! snapshot from the object store).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

const CAMERA: [&str; 13] = [
    "Aqua.jpg",
    "Blinds.jpg",
    "Dune.jpg",
    "Elephants_5640x3172.jpg",
    "FreshFlower.jpg",
    "Garden.jpg",
    "GreenMeadow.jpg",
    "LadyBird.jpg",
    "RainDrops.jpg",
    "Storm.jpg",
    "TwoWings.jpg",
    "Wood.jpg",
    "YellowFlower.jpg",
];
const SAMPLES: [&str; 7] = [
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "rocket.jpg",
];
const SNAPSHOT_KEY: &str = "index/search-efficientnet-lite0.snapshot";

async fn get(server: &Server, path: &str) -> (u16, Value) {
    let (status, text) = server.get(path).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: {text}"));
    (status, value)
}

/// A search that must succeed.
async fn search(server: &Server, query: &str) -> Value {
    let (status, body) = get(server, &format!("/v1/search?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn ids(page: &Value) -> Vec<String> {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn scores(page: &Value) -> Vec<f64> {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect()
}

/// Waits until the photo is at an outcome, and returns its status.
async fn settled(server: &Server, id: &str) -> String {
    eventually(id, Duration::from_secs(300), async || {
        let (_, photo) = get(server, &format!("/v1/photos/{id}")).await;
        let status = photo["status"].as_str().unwrap_or("").to_string();
        ["published", "needs_review", "rejected"]
            .contains(&status.as_str())
            .then_some(status)
    })
    .await
}

/// Waits until `server`'s search sees `n` photos at an outcome.
async fn sees(server: &Server, n: u64) {
    eventually(
        &format!("search sees {n} photos"),
        Duration::from_secs(60),
        async || {
            let (status, page) =
                get(server, "/v1/search?status=published,needs_review,rejected").await;
            (status == 200 && page["total"] == n).then_some(())
        },
    )
    .await;
}

fn chelsea_flipped() -> Vec<u8> {
    let cat = image::load_from_memory(&sample("chelsea.png"))
        .unwrap()
        .fliph();
    let mut out = std::io::Cursor::new(Vec::new());
    cat.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Every check on one catalogue; `photos` maps file names to ids.
async fn searches(
    server: &Server,
    photos: &BTreeMap<&str, String>,
    statuses: &BTreeMap<String, String>,
) {
    let id = |name: &str| photos[name].clone();
    let name_of = |id: &str| {
        photos
            .iter()
            .find(|(_, v)| v.as_str() == id)
            .map_or("?", |(k, _)| *k)
            .to_string()
    };
    let published: Vec<&String> = statuses
        .iter()
        .filter(|(_, s)| *s == "published")
        .map(|(id, _)| id)
        .collect();

    // No text, no filter: every published photo, newest first, no score.
    let all = search(server, "limit=100").await;
    assert_eq!(all["total"], published.len() as u64);
    let listed = ids(&all);
    assert_eq!(listed.len(), published.len());
    // Uploaded one after another: newest first is the upload order reversed.
    let newest_first: Vec<String> = corpus()
        .iter()
        .rev()
        .map(|(name, _, _)| id(name))
        .filter(|i| statuses[i] == "published")
        .collect();
    assert_eq!(listed, newest_first);
    assert!(all["results"][0]["score"].is_null());
    assert_eq!(all["query"]["sort"], "newest");
    for facet in ["orientation", "size"] {
        let sum: u64 = all["facets"][facet]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(sum, published.len() as u64, "{facet} facet");
    }
    let result = &all["results"][0];
    assert_eq!(
        result["thumbnail"],
        format!(
            "/v1/photos/{}/thumbnail?preset=small",
            result["id"].as_str().unwrap()
        )
    );

    // Text: a class, a WordNet hypernym over classes, a plural.
    let cat = search(server, "q=cat").await;
    assert_eq!(ids(&cat).first(), Some(&id("chelsea.png")), "{cat}");
    assert!(scores(&cat)[0] > 0.5);
    let animals = search(server, "q=animal&limit=100").await;
    let found: Vec<String> = ids(&animals).iter().map(|i| name_of(i)).collect();
    for expected in ["chelsea.png", "Elephants_5640x3172.jpg", "LadyBird.jpg"] {
        assert!(found.contains(&expected.to_string()), "animal: {found:?}");
    }
    let s = scores(&animals);
    assert!(s.windows(2).all(|w| w[0] >= w[1]), "best first: {s:?}");
    assert!(s.iter().all(|&x| x >= 0.15), "the default cut: {s:?}");
    let flowers = search(server, "q=flowers").await;
    let found: Vec<String> = ids(&flowers).iter().map(|i| name_of(i)).collect();
    for expected in ["FreshFlower.jpg", "YellowFlower.jpg"] {
        assert!(found.contains(&expected.to_string()), "flowers: {found:?}");
    }
    assert_eq!(flowers["query"]["phrases"][0]["phrase"], "flowers");
    let strict = search(server, "q=animal&minScore=0.95&limit=100").await;
    assert!(strict["total"].as_u64() < animals["total"].as_u64());
    assert!(scores(&strict).iter().all(|&x| x >= 0.95));
    // Every phrase must match: cat and flower are never together here.
    assert_eq!(search(server, "q=cat+flower").await["total"], 0);
    // A word that is no term, no lemma: nothing, rather than everything.
    assert_eq!(search(server, "q=qwzx").await["total"], 0);
    // Words no photo has a concept for go through the text encoder
    // (MiniLM) to the nearest concepts: a pond is water.
    let pond = search(server, "q=pond").await;
    let terms: Vec<&str> = pond["query"]["phrases"][0]["terms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[0].as_str().unwrap())
        .collect();
    assert!(terms.contains(&"water"), "pond: {terms:?}");
    assert!(pond["total"].as_u64().unwrap() > 0);
    for r in pond["results"].as_array().unwrap() {
        assert!(
            r["concepts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| terms.contains(&c[0].as_str().unwrap())),
            "pond: {r}"
        );
    }
    // A puppy is a dog; with no dog here, the nearest are pets: the cat.
    let puppy = search(server, "q=puppy").await;
    assert!(ids(&puppy).contains(&id("chelsea.png")), "{puppy}");

    // Similar photos: the photo itself left out, best first, above the cut.
    let flower = id("FreshFlower.jpg");
    let like = search(server, &format!("similarTo={flower}")).await;
    let found = ids(&like);
    assert!(!found.is_empty() && !found.contains(&flower), "{like}");
    let s = scores(&like);
    assert!(
        s.windows(2).all(|w| w[0] >= w[1]) && s.iter().all(|&x| x >= 0.3),
        "{s:?}"
    );
    assert!(
        like["results"][0]["concepts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c[0] == "flower"),
        "a flower is most like a flower: {}",
        like["results"][0]
    );
    // ...and a photo from the body: its stored twin first, at similarity 1.
    let (status, body, _) = server
        .post_to(
            "/v1/search/similar",
            "image/jpeg",
            camera("FreshFlower.jpg"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body)[0], flower);
    assert!(scores(&body)[0] > 0.99, "{}", body["results"][0]);
    // Filters apply inside the similar-photo search.
    let only_bob = search(
        server,
        &format!("similarTo={flower}&uploader=bob&minScore=0"),
    )
    .await;
    assert!(!ids(&only_bob).is_empty());
    assert!(ids(&only_bob)
        .iter()
        .all(|i| SAMPLES.contains(&name_of(i).as_str())));

    // Filters.
    let check_all = |page: &Value, what: &str, ok: &dyn Fn(&Value) -> bool| {
        for r in page["results"].as_array().unwrap() {
            assert!(ok(r), "{what}: {r}");
        }
    };
    let ratio = |r: &Value| r["width"].as_f64().unwrap() / r["height"].as_f64().unwrap();
    let wide = search(server, "orientation=widescreen&limit=100").await;
    assert!(wide["total"].as_u64().unwrap() > 0);
    check_all(&wide, "widescreen", &|r| (1.6..2.0).contains(&ratio(r)));
    let squareish = search(server, "orientation=square,portrait&limit=100").await;
    check_all(&squareish, "square or portrait", &|r| ratio(r) <= 1.05);
    let small = search(server, "size=small&limit=100").await;
    assert!(small["total"].as_u64().unwrap() > 0);
    check_all(&small, "small", &|r| {
        r["width"].as_f64().unwrap() * r["height"].as_f64().unwrap() < 1e6
    });
    let large = search(server, "size=large&limit=100").await;
    check_all(&large, "large", &|r| {
        r["width"].as_f64().unwrap() * r["height"].as_f64().unwrap() >= 4e6
    });
    let bob = search(server, "uploader=bob&limit=100").await;
    assert!(ids(&bob)
        .iter()
        .all(|i| SAMPLES.contains(&name_of(i).as_str())));
    assert_eq!(search(server, "uploader=nobody").await["total"], 0);
    let review = search(server, "status=needs_review&limit=100").await;
    let waiting: Vec<String> = ids(&review).iter().map(|i| name_of(i)).collect();
    assert!(
        waiting.contains(&"astronaut.png".to_string()),
        "{waiting:?}"
    );
    assert_eq!(search(server, "from=2999-01-01").await["total"], 0);
    assert_eq!(search(server, "to=2000-01-01").await["total"], 0);
    assert_eq!(
        search(server, "from=2000-01-01").await["total"],
        all["total"]
    );
    let vehicles = search(server, "concept=vehicle&concept=no-people&limit=100").await;
    assert!(vehicles["total"].as_u64().unwrap() > 0);
    check_all(&vehicles, "vehicle and no-people", &|r| {
        let names: Vec<&str> = r["concepts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c[0].as_str().unwrap())
            .collect();
        names.contains(&"vehicle") && names.contains(&"no-people")
    });
    assert_eq!(search(server, "concept=unicorn").await["total"], 0);

    // Pages: a cursor walks the same list, without repeats, to the end.
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=3&cursor={c}"),
            None => "limit=3".into(),
        };
        let page = search(server, &query).await;
        assert_eq!(page["total"], all["total"]);
        walked.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(walked, listed);
    let ranked = search(server, "q=animal&limit=2").await;
    let next = ranked["nextCursor"].as_str().unwrap();
    let second = search(server, &format!("q=animal&limit=2&cursor={next}")).await;
    assert_eq!(
        [ids(&ranked), ids(&second)].concat(),
        ids(&animals)[..4].to_vec()
    );

    // Bad input, each with its code.
    for (query, status, expected) in [
        ("orientation=diagonal", 400, "invalid_parameter"),
        ("size=huge", 400, "invalid_parameter"),
        ("sort=prettiest", 400, "invalid_parameter"),
        // No feedback yet: no global aesthetic head to rank by.
        ("sort=aesthetic", 409, "no_aesthetic_head"),
        ("sort=aesthetic&user=a%20b", 400, "invalid_parameter"),
        ("status=gone", 400, "invalid_parameter"),
        ("limit=101", 400, "invalid_parameter"),
        ("minScore=-1", 400, "invalid_parameter"),
        ("from=yesterday", 400, "invalid_parameter"),
        ("colour=red", 400, "unknown_parameter"),
        ("cursor=bm9wZQ", 400, "invalid_cursor"),
        (&format!("q=cat&cursor={next}"), 400, "invalid_cursor"),
        (
            &format!("similarTo={}", "0".repeat(64)),
            404,
            "photo_not_found",
        ),
        ("similarTo=abc", 400, "invalid_parameter"),
    ] {
        let (got, body) = get(server, &format!("/v1/search?{query}")).await;
        assert_eq!((got, code(&body)), (status, expected), "{query}: {body}");
    }
    let (status, body, _) = server
        .post_to("/v1/search/similar", "image/png", b"not a png".to_vec())
        .await;
    assert!(status == 415 || status == 422, "{status} {body}");
}

async fn upload_all(
    server: &Server,
    photos: &[(&'static str, Vec<u8>, &str)],
) -> BTreeMap<&'static str, String> {
    let mut ids = BTreeMap::new();
    for (name, bytes, uploader) in photos {
        ids.insert(
            *name,
            upload_photo(server, bytes.clone(), Some(uploader)).await,
        );
    }
    ids
}

fn corpus() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    CAMERA
        .iter()
        .map(|n| (*n, camera(n), "alice"))
        .chain(SAMPLES.iter().map(|n| (*n, sample(n), "bob")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    let dir = std::env::temp_dir().join(format!("darkroom-test-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let shared = |config: &mut server::ServerConfig| {
        config.storage = storage::StorageConfig::Local {
            path: dir.join("blobs"),
        };
        config.metadata = pipeline::MetadataConfig::Sqlite {
            path: dir.join("darkroom.db"),
        };
        config.search.poll_ms = 50;
    };
    let a = Server::start(shared).await;
    let photos = upload_all(&a, &corpus()).await;
    let mut statuses = BTreeMap::new();
    for id in photos.values() {
        statuses.insert(id.clone(), settled(&a, id).await);
    }
    sees(&a, photos.len() as u64).await;
    searches(&a, &photos, &statuses).await;
    assert!(a
        .state
        .search()
        .unwrap()
        .status()
        .origin
        .starts_with("built"));
    a.stop().await;

    // A restart loads the snapshot written at shutdown, and follows on.
    let snapshot = dir.join("index").join("search-efficientnet-lite0.snapshot");
    assert!(
        snapshot.is_file(),
        "{} written at shutdown",
        snapshot.display()
    );
    let b = Server::start(shared).await;
    sees(&b, photos.len() as u64).await;
    let origin = b.state.search().unwrap().status().origin;
    assert!(origin.starts_with("loaded from"), "{origin}");
    searches(&b, &photos, &statuses).await;
    let flipped = upload_photo(&b, chelsea_flipped(), Some("carol")).await;
    settled(&b, &flipped).await;
    sees(&b, photos.len() as u64 + 1).await;
    let cats = search(&b, "q=cat").await;
    assert_eq!(cats["total"], 2, "{cats}");
    let twin = search(&b, &format!("similarTo={}", photos["chelsea.png"])).await;
    assert_eq!(ids(&twin)[0], flipped, "{twin}");
    assert!(scores(&twin)[0] > 0.8, "{twin}");
    b.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out() {
    let backends = ScaleOut::new("search_http").await;
    let tweak = |role: server::Role| {
        let backends = &backends;
        move |config: &mut server::ServerConfig| {
            backends.apply(config);
            config.role = role;
            config.search.poll_ms = 50;
        }
    };
    // The workers' process, and an API-only replica that follows the stream.
    let a = Server::start(tweak(server::Role::All)).await;
    let b = Server::start(tweak(server::Role::Api)).await;
    let photos = upload_all(&a, &corpus()).await;
    let mut statuses = BTreeMap::new();
    for id in photos.values() {
        statuses.insert(id.clone(), settled(&a, id).await);
    }
    sees(&b, photos.len() as u64).await;
    searches(&b, &photos, &statuses).await;
    b.stop().await;
    // B wrote its snapshot to the object store at shutdown; a new replica
    // loads it and follows the stream from there.
    assert!(a.state.blobs().exists(SNAPSHOT_KEY).await.unwrap());
    let c = Server::start(tweak(server::Role::Api)).await;
    sees(&c, photos.len() as u64).await;
    let origin = c.state.search().unwrap().status().origin;
    assert!(origin.starts_with("loaded from"), "{origin}");
    let flipped = upload_photo(&a, chelsea_flipped(), Some("carol")).await;
    settled(&a, &flipped).await;
    sees(&c, photos.len() as u64 + 1).await;
    let twin = search(&c, &format!("similarTo={}", photos["chelsea.png"])).await;
    assert_eq!(ids(&twin)[0], flipped, "{twin}");
    assert_eq!(search(&c, "q=cat&uploader=carol").await["total"], 1);
    c.stop().await;
    a.stop().await;
    backends.remove().await;
}
