//! `/v1/users/{user}/feedback` over HTTP: signals recorded (the last per
//! user and photo winning) and listed newest first a page at a time, and
//! every bad input refused with its code; embedded and scaled out.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn feedback_over_http(server: Server) {
    let daisy = upload_photo(&server, camera("FreshFlower.jpg"), Some("ana")).await;
    let dune = upload_photo(&server, camera("Dune.jpg"), Some("ana")).await;
    // Feedback needs the photo stored, not analysed: give it at once.
    let give = |photo: &str, signal: &str| json!({"photoId": photo, "signal": signal});
    let path = "/v1/users/curator-1/feedback";
    let (status, body) = request(&server, "POST", path, Some(give(&daisy, "like"))).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["photoId"].as_str(), body["signal"].as_str()),
        (Some(daisy.as_str()), Some("like"))
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (status, _) = request(&server, "POST", path, Some(give(&dune, "skip"))).await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(5)).await;
    // She changed her mind about the daisy: the last signal wins.
    let (status, _) = request(&server, "POST", path, Some(give(&daisy, "pick"))).await;
    assert_eq!(status, 202);

    let (status, page) = request(&server, "GET", &format!("{path}?limit=1"), None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["user"], "curator-1");
    assert_eq!(page["feedback"][0]["photoId"], json!(daisy));
    assert_eq!(page["feedback"][0]["signal"], "pick");
    let next = page["nextCursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let (_, rest) = request(
        &server,
        "GET",
        &format!("{path}?limit=1&cursor={next}"),
        None,
    )
    .await;
    assert_eq!(rest["feedback"][0]["photoId"], json!(dune));
    assert_eq!(rest["feedback"][0]["signal"], "skip");
    assert!(rest.get("nextCursor").is_none(), "{rest}");
    let (_, other) = request(&server, "GET", "/v1/users/someone-else/feedback", None).await;
    assert_eq!(other["feedback"], json!([]));

    // Bad input, each with its code; nothing recorded.
    let zeros = "0".repeat(64);
    for (path, body, status, want) in [
        (path, give(&zeros, "like"), 404, "photo_not_found"),
        (path, give(&daisy, "love"), 400, "invalid_signal"),
        (
            "/v1/users/a%20b/feedback",
            give(&daisy, "like"),
            400,
            "invalid_user_id",
        ),
        (path, json!({"photoId": daisy}), 400, "invalid_json"),
        (
            path,
            json!({"photoId": daisy, "signal": "like", "extra": 1}),
            400,
            "invalid_json",
        ),
    ] {
        let (got, answer) = request(&server, "POST", path, Some(body)).await;
        assert_eq!((got, code(&answer)), (status, want), "{answer}");
    }
    let long = format!("/v1/users/{}/feedback", "u".repeat(65));
    let (got, answer) = request(&server, "GET", &long, None).await;
    assert_eq!((got, code(&answer)), (400, "invalid_user_id"), "{answer}");
    let (got, answer) = request(&server, "GET", &format!("{path}?cursor=junk"), None).await;
    assert_eq!((got, code(&answer)), (400, "invalid_cursor"), "{answer}");
    let (_, all) = request(&server, "GET", path, None).await;
    assert_eq!(all["feedback"].as_array().unwrap().len(), 2, "{all}");

    // Popularity: the daisy is picked (2), the dune skipped (0); a second
    // user likes the dune (1). Shown on the photo, and search ranks by it.
    let other = "/v1/users/curator-2/feedback";
    let (status, _) = request(&server, "POST", other, Some(give(&dune, "like"))).await;
    assert_eq!(status, 202);
    let (_, photo) = request(&server, "GET", &format!("/v1/photos/{daisy}"), None).await;
    let popular = photo["popular"].as_f64().unwrap();
    assert!((1.99..=2.0).contains(&popular), "{photo}");
    let every = "status=stored,analyzed,reviewed,indexed,published,needs_review,rejected,failed";
    eventually(
        "ranked by popularity",
        Duration::from_secs(30),
        async || {
            let (_, page) = request(
                &server,
                "GET",
                &format!("/v1/search?sort=popular&{every}"),
                None,
            )
            .await;
            let ids: Vec<&str> = page["results"]
                .as_array()?
                .iter()
                .filter_map(|r| r["id"].as_str())
                .collect();
            (ids == [daisy.as_str(), dune.as_str()]).then_some(())
        },
    )
    .await;
    // Changed minds change the order.
    let (status, _) = request(&server, "POST", path, Some(give(&daisy, "dislike"))).await;
    assert_eq!(status, 202);
    eventually("re-ranked", Duration::from_secs(30), async || {
        let (_, page) = request(
            &server,
            "GET",
            &format!("/v1/search?sort=popular&{every}"),
            None,
        )
        .await;
        (page["results"][0]["id"] == json!(dune)).then_some(())
    })
    .await;
    server.stop().await;
}

/// Green, growing things liked; sand, sky, water and wood disliked.
const LIKED: [&str; 5] = [
    "FreshFlower.jpg",
    "YellowFlower.jpg",
    "Garden.jpg",
    "GreenMeadow.jpg",
    "LadyBird.jpg",
];
const DISLIKED: [&str; 5] = [
    "Dune.jpg",
    "Storm.jpg",
    "Aqua.jpg",
    "Blinds.jpg",
    "Wood.jpg",
];

/// A personal head trained from one user's feedback once they have 4
/// signals of each kind, retrained as they give more, served without a
/// restart, and scoring photos it was not trained on by that user's taste.
async fn personal_heads_over_http(writer: Server, server: Server) {
    // Photos and signals go in through one server; everything is read
    // from the other, which learns of the heads by polling the store.
    let mut ids = std::collections::BTreeMap::new();
    for name in LIKED.iter().chain(&DISLIKED).chain(&["TwoWings.jpg"]) {
        ids.insert(*name, upload_photo(&writer, camera(name), None).await);
    }
    ids.insert(
        "rocket.jpg",
        upload_photo(&writer, sample("rocket.jpg"), None).await,
    );
    for (name, id) in &ids {
        eventually(name, Duration::from_secs(300), async || {
            let (_, photo) = request(&server, "GET", &format!("/v1/photos/{id}"), None).await;
            photo["analysis"].is_object().then_some(())
        })
        .await;
    }
    let path = "/v1/users/green-fan/feedback";
    let give = async |name: &str, signal: &str| {
        let body = json!({"photoId": ids[name], "signal": signal});
        let (status, answer) = request(&writer, "POST", path, Some(body)).await;
        assert_eq!(status, 202, "{answer}");
    };
    let personal = async |name: &str, user: &str| {
        let (status, photo) = request(
            &server,
            "GET",
            &format!("/v1/photos/{}?user={user}", ids[name]),
            None,
        )
        .await;
        assert_eq!(status, 200, "{photo}");
        photo["aesthetics"]["personal"].as_f64()
    };
    let head = async || {
        let (status, head) = request(&server, "GET", "/v1/users/green-fan/aesthetic", None).await;
        (status == 200).then(|| (head["positives"].as_u64(), head["negatives"].as_u64()))
    };
    // Too few signals: no head, and nothing invented.
    for name in &LIKED[..3] {
        give(name, "like").await;
    }
    for name in &DISLIKED[..3] {
        give(name, "dislike").await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(personal("TwoWings.jpg", "green-fan").await, None);
    let (status, answer) = request(&server, "GET", "/v1/users/green-fan/aesthetic", None).await;
    assert_eq!(
        (status, code(&answer)),
        (409, "no_aesthetic_head"),
        "{answer}"
    );
    // The fourth of each (MIN_SIGNALS): trained in the background, then
    // served.
    give(LIKED[3], "like").await;
    give(DISLIKED[3], "dislike").await;
    eventually("the head served", Duration::from_secs(60), async || {
        personal("TwoWings.jpg", "green-fan").await
    })
    .await;
    assert_eq!(head().await, Some((Some(4), Some(4))));
    // Retrained as her feedback grows.
    give(LIKED[4], "pick").await;
    give(DISLIKED[4], "skip").await;
    eventually("the head retrained", Duration::from_secs(60), async || {
        (head().await == Some((Some(5), Some(5)))).then_some(())
    })
    .await;
    let wings = personal("TwoWings.jpg", "green-fan").await.unwrap();
    let rocket = personal("rocket.jpg", "green-fan").await.unwrap();
    assert!(
        wings > rocket,
        "a green photo she never saw scores {wings}, a rocket {rocket}"
    );
    assert!((0.0..=1.0).contains(&wings) && (0.0..=1.0).contains(&rocket));
    // /v1/analyze scores a photo it is sent the same way, and leaves the
    // embedding out unless asked for it.
    let (status, analysed, _) = server
        .post_to(
            "/v1/analyze?user=green-fan",
            "image/jpeg",
            camera("TwoWings.jpg"),
        )
        .await;
    assert_eq!(status, 200, "{analysed}");
    let sent = analysed["results"][0]["aesthetics"]["personal"]
        .as_f64()
        .unwrap();
    assert!(
        (sent - wings).abs() < 1e-3,
        "analyze {sent}, stored {wings}"
    );
    assert!(analysed["results"][0].get("embedding").is_none());
    // The global head is trained from everyone's signals (only hers here)
    // on a schedule (an hour here, so not yet) or on command; then it
    // scores for anyone, and someone else still has no personal score.
    let (_, overview) = request(&server, "GET", "/v1/aesthetics", None).await;
    assert!(overview.get("global").is_none(), "{overview}");
    assert_eq!(overview["personalHeads"], 1, "{overview}");
    assert_eq!(overview["minSignals"], 4, "{overview}");
    let (status, queued) = request(&writer, "POST", "/v1/aesthetics/retrain", None).await;
    assert_eq!(status, 202, "{queued}");
    assert!(queued["queued"].as_str().is_some(), "{queued}");
    let global = eventually(
        "the global head served",
        Duration::from_secs(60),
        async || {
            let (_, other, _) = server
                .post_to(
                    "/v1/analyze?user=someone-else",
                    "image/jpeg",
                    camera("TwoWings.jpg"),
                )
                .await;
            let scores = &other["results"][0]["aesthetics"];
            assert!(scores.get("personal").is_none(), "{other}");
            scores["global"].as_f64()
        },
    )
    .await;
    assert!((0.0..=1.0).contains(&global));
    let (_, overview) = request(&server, "GET", "/v1/aesthetics", None).await;
    assert!(
        overview["global"]["positives"].as_u64() >= Some(5),
        "{overview}"
    );
    let (_, photo) = request(
        &server,
        "GET",
        &format!("/v1/photos/{}", ids["rocket.jpg"]),
        None,
    )
    .await;
    assert!(photo["aesthetics"]["global"].as_f64().is_some(), "{photo}");
    assert!(photo["aesthetics"].get("personal").is_none(), "{photo}");

    // Search ranks by her taste: scores descending, a green photo first.
    let every = "status=stored,analyzed,reviewed,indexed,published,needs_review,rejected,failed";
    let page = eventually("ranked by taste", Duration::from_secs(30), async || {
        let (status, page) = request(
            &server,
            "GET",
            &format!("/v1/search?sort=aesthetic&user=green-fan&{every}&limit=100"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        (page["results"].as_array()?.len() == ids.len()).then_some(page)
    })
    .await;
    let ranked: Vec<(String, f64)> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["aesthetic"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(ranked.windows(2).all(|w| w[0].1 >= w[1].1), "{page}");
    let green: Vec<&String> = LIKED
        .iter()
        .chain(&["TwoWings.jpg"])
        .map(|n| &ids[n])
        .collect();
    assert!(green.contains(&&ranked[0].0), "{page}");
    assert_eq!(page["query"]["sort"], "aesthetic");
    let (status, by_everyone) = request(
        &server,
        "GET",
        &format!("/v1/search?sort=aesthetic&{every}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{by_everyone}");
    assert!(by_everyone["results"][0]["aesthetic"].as_f64().is_some());
    let (got, answer) = request(
        &server,
        "GET",
        "/v1/search?sort=aesthetic&user=nobody",
        None,
    )
    .await;
    assert_eq!((got, code(&answer)), (409, "no_aesthetic_head"), "{answer}");

    // Another user has no head; a bad user id is refused.
    assert_eq!(personal("TwoWings.jpg", "someone-else").await, None);
    let (status, answer) = request(
        &server,
        "GET",
        &format!("/v1/photos/{}?user=a%20b", ids["rocket.jpg"]),
        None,
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (400, "invalid_user_id"),
        "{answer}"
    );
    server.stop().await;
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_embedded() {
    let dir = std::env::temp_dir().join(format!("darkroom-test-personal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let shared = |c: &mut server::ServerConfig| {
        c.storage = storage::StorageConfig::Local {
            path: dir.join("blobs"),
        };
        c.metadata = pipeline::MetadataConfig::Sqlite {
            path: dir.join("darkroom.db"),
        };
        c.pipeline.concept_poll_ms = 200;
        c.pipeline.aesthetic_global_every_s = 3600;
    };
    let writer = Server::start(shared).await;
    let reader = Server::start(shared).await;
    personal_heads_over_http(writer, reader).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_scale_out() {
    let backends = ScaleOut::new("personal_http").await;
    let tweak = |c: &mut server::ServerConfig| {
        backends.apply(c);
        c.pipeline.concept_poll_ms = 200;
        c.pipeline.aesthetic_global_every_s = 3600;
    };
    let writer = Server::start(tweak).await;
    let reader = Server::start(tweak).await;
    personal_heads_over_http(writer, reader).await;
    backends.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    feedback_over_http(Server::start(|_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out() {
    let backends = ScaleOut::new("feedback_http").await;
    feedback_over_http(Server::start(|c| backends.apply(c)).await).await;
    backends.remove().await;
}
