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
