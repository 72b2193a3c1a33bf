//! Stored photos and thumbnails over HTTP, on the real photos: content ids,
//! cache hits and 304s, presets including a model's exact input, signed URLs,
//! limits, and the S3 backend against a real S3-compatible server (moto).

mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Uploads raw bytes; returns the status and the JSON answer.
async fn upload(server: &Server, content_type: &str, bytes: Vec<u8>) -> (u16, Value) {
    let (status, value, _) = server.post_to("/v1/photos", content_type, bytes).await;
    (status, value)
}

async fn fetch(server: &Server, path: &str, etag: Option<&str>) -> reqwest::Response {
    let mut request = server.client.get(format!("{}{path}", server.url));
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    request.send().await.expect("the server answers")
}

fn decoded_size(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory(bytes).expect("a decodable image");
    (image.width(), image.height())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originals_are_stored_by_content_and_thumbnails_cached() {
    let server = Server::start(|_| {}).await;
    let jpeg = camera("Garden.jpg");
    let id = hex::encode(Sha256::digest(&jpeg));

    let (status, body) = upload(&server, "image/jpeg", jpeg.clone()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"], id);
    assert_eq!(body["format"], "jpeg");
    assert_eq!(body["created"], true);
    let again = json!({ "data": b64(&jpeg) });
    let (status, body) = upload(
        &server,
        "application/json",
        serde_json::to_vec(&again).unwrap(),
    )
    .await;
    assert_eq!(
        (status, &body["id"], &body["created"]),
        (200, &json!(id), &json!(false))
    );

    let original = fetch(&server, &format!("/v1/photos/{id}/original"), None).await;
    assert_eq!(original.status(), 200);
    assert_eq!(original.headers()["content-type"], "image/jpeg");
    let etag = original.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(original.bytes().await.unwrap().as_ref(), jpeg.as_slice());
    let unchanged = fetch(&server, &format!("/v1/photos/{id}/original"), Some(&etag)).await;
    assert_eq!(unchanged.status(), 304);

    let path = format!("/v1/photos/{id}/thumbnail?w=256&h=256");
    let first = fetch(&server, &path, None).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "image/jpeg");
    assert!(first.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let bytes = first.bytes().await.unwrap();
    assert_eq!(decoded_size(&bytes), (256, 256));
    let second = fetch(&server, &path, None).await;
    assert_eq!(
        second.bytes().await.unwrap(),
        bytes,
        "served from the cache"
    );
    assert_eq!(fetch(&server, &path, Some(&etag)).await.status(), 304);
    let metrics = server.get("/metrics").await.1;
    assert!(
        metrics.contains("darkroom_thumbnails_total{cache=\"miss\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("darkroom_thumbnails_total{cache=\"hit\"} 1"),
        "{metrics}"
    );

    let contain = fetch(
        &server,
        &format!("/v1/photos/{id}/thumbnail?w=300&h=300&fit=contain&format=png"),
        None,
    )
    .await;
    assert_eq!(contain.headers()["content-type"], "image/png");
    let (w, h) = decoded_size(&contain.bytes().await.unwrap());
    assert!(w == 300 || h == 300, "{w}x{h} fits inside 300x300");
    assert!(w <= 300 && h <= 300);

    let preset = fetch(
        &server,
        &format!("/v1/photos/{id}/thumbnail?preset=small"),
        None,
    )
    .await;
    assert_eq!(preset.status(), 200);
    assert_eq!(decoded_size(&preset.bytes().await.unwrap()), (256, 256));
    server.stop().await;
}

/// A square 2400×2400 JPEG cut from the 18 MP camera photo: in fast mode
/// EfficientNet alone would decode it at 1/4 (600 px), but BRISQUE, loaded
/// beside it, needs 640, so inference decodes it at 1/2. A thumbnail that
/// planned its decode on the one model would show other pixels.
fn near_square_jpeg() -> Vec<u8> {
    let big = image::load_from_memory(&camera("Elephants_5640x3172.jpg")).unwrap();
    let square = big.crop_imm(1600, 400, 2400, 2400).to_rgb8();
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&square)
        .unwrap();
    out.into_inner()
}

/// `?preset=model:NAME` serves exactly the pixels inference feeds that
/// model: compared with the tensor `Analyzer::prepare` makes (every loaded
/// model, the server's decode mode), in both decode modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_preset_is_exactly_the_tensor_inference_feeds_the_model() {
    let photos = [
        camera("LadyBird.jpg"),
        near_square_jpeg(),
        sample("astronaut.png"),
    ];
    for decode in [engine::DecodeChoice::Exact, engine::DecodeChoice::Fast] {
        let server = Server::start(|config| config.engine.decode = decode).await;
        // What inference does, through the same function the engine calls.
        let repo = models::Repository::open(&home().models()).unwrap();
        models::onnx_runtime::init_runtime(&home().ort_library()).unwrap();
        let analyzer = models::analyzer::Analyzer::load(
            &repo,
            &engine::load_options(&server.state.config().engine),
        )
        .unwrap();
        let index = analyzer
            .backbones()
            .iter()
            .find(|b| b.model == "efficientnet-lite0")
            .unwrap()
            .index;
        let spec = analyzer.input_spec("efficientnet-lite0").unwrap().clone();
        for photo in &photos {
            let (_, body) = upload(&server, "image/jpeg", photo.clone()).await;
            let id = body["id"].as_str().unwrap().to_string();
            let response = fetch(
                &server,
                &format!("/v1/photos/{id}/thumbnail?preset=model:efficientnet-lite0"),
                None,
            )
            .await;
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "image/png");
            let served = image::load_from_memory(&response.bytes().await.unwrap())
                .unwrap()
                .to_rgb8();
            assert_eq!((served.width(), served.height()), (224, 224));
            let served = imaging::RgbImage {
                width: 224,
                height: 224,
                data: served.into_raw(),
            };
            let mut from_thumbnail = vec![0f32; spec.tensor_len()];
            spec.write_tensor(&served, &mut from_thumbnail);
            let prepared = analyzer
                .prepare(photo, &imaging::Limits::default(), &analyzer.select_all())
                .unwrap();
            let fed = prepared.input(index).unwrap();
            assert!(
                from_thumbnail == fed,
                "{decode:?}: the served pixels are not the ones inference feeds the model"
            );
        }
        server.stop().await;
    }
}

const KEY: &str = "0123456789abcdef0123456789abcdef";
const OLD_KEY: &str = "fedcba9876543210fedcba9876543210";
const SALT: &str = "5a17";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_accept_current_and_old_keys_and_refuse_the_rest() {
    let server = Server::start(|config| {
        config.thumbnails.signing_keys = vec![KEY.into(), OLD_KEY.into()];
        config.thumbnails.signing_salt = SALT.into();
    })
    .await;
    let (_, body) = upload(&server, "image/jpeg", camera("Aqua.jpg")).await;
    let id = body["id"].as_str().unwrap().to_string();
    let path = format!("/v1/photos/{id}/thumbnail?w=128&h=128");

    let unsigned = fetch(&server, &path, None).await;
    assert_eq!(unsigned.status(), 403);
    assert_eq!(code(&unsigned.json_value().await), "signature_required");

    let signer = server::signing::Signer::new(&[KEY.into()], SALT).unwrap();
    let sig = signer.sign(&path).unwrap();
    let signed = fetch(&server, &format!("{path}&sig={sig}"), None).await;
    assert_eq!(signed.status(), 200);

    let old = server::signing::Signer::new(&[OLD_KEY.into()], SALT).unwrap();
    let sig_old = old.sign(&path).unwrap();
    assert_eq!(
        fetch(&server, &format!("{path}&sig={sig_old}"), None)
            .await
            .status(),
        200
    );

    let tampered = fetch(
        &server,
        &format!("/v1/photos/{id}/thumbnail?w=129&h=128&sig={sig}"),
        None,
    )
    .await;
    assert_eq!(tampered.status(), 403);
    assert_eq!(code(&tampered.json_value().await), "signature_invalid");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_parameters_get_specific_codes() {
    let server = Server::start(|config| {
        config.limits.max_image_bytes = 1_000_000;
        config.thumbnails.max_output_pixels = 1_000_000;
    })
    .await;
    let (status, body) = upload(&server, "image/png", huge_png_header()).await;
    assert_eq!((status, code(&body)), (413, "too_many_pixels"), "{body}");
    let (status, body) = upload(
        &server,
        "image/jpeg",
        sample("hubble_deep_field.jpg").repeat(20),
    )
    .await;
    assert_eq!((status, code(&body)), (413, "image_too_large"), "{body}");
    let (status, body) = upload(&server, "image/jpeg", b"not a photo".to_vec()).await;
    assert_eq!((status, code(&body)), (415, "unsupported_format"), "{body}");
    let (status, body) = upload(&server, "text/plain", b"hello".to_vec()).await;
    assert_eq!(
        (status, code(&body)),
        (415, "unsupported_media_type"),
        "{body}"
    );

    let (_, body) = upload(&server, "image/png", sample("coffee.png")).await;
    let id = body["id"].as_str().unwrap().to_string();
    let cases = [
        (
            format!("/v1/photos/{id}/thumbnail?w=200&h=200&enlarge=1"),
            400,
            "invalid_request",
        ),
        (
            format!("/v1/photos/{id}/thumbnail?w=5000&h=5000"),
            413,
            "output_too_large",
        ),
        (
            format!("/v1/photos/{id}/thumbnail?w=100&h=100&fit=squash"),
            400,
            "invalid_request",
        ),
        (
            format!("/v1/photos/{id}/thumbnail?w=0&h=0"),
            400,
            "invalid_thumbnail",
        ),
        (
            format!("/v1/photos/{id}/thumbnail?preset=huge"),
            400,
            "unknown_preset",
        ),
        (
            format!("/v1/photos/{id}/thumbnail?preset=model:resnet-9000"),
            400,
            "unknown_preset",
        ),
        (
            format!("/v1/photos/{}/thumbnail?w=10", "0".repeat(64)),
            404,
            "photo_not_found",
        ),
        (
            "/v1/photos/not-an-id/original".to_string(),
            404,
            "photo_not_found",
        ),
    ];
    for (path, status, expected) in cases {
        let response = fetch(&server, &path, None).await;
        let got = response.status().as_u16();
        let value = response.json_value().await;
        assert_eq!((got, code(&value)), (status, expected), "{path}: {value}");
    }
    server.stop().await;
}

/// The same round trip on the S3 backend, against moto on loopback
/// (`scripts/test.sh` starts it and sets `MOTO_ENDPOINT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_backend_stores_originals_and_thumbnails() {
    let storage = moto_bucket("photos").await;
    let server = Server::start(|config| config.storage = storage).await;
    let jpeg = camera("Storm.jpg");
    let (status, body) = upload(&server, "image/jpeg", jpeg.clone()).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let original = fetch(&server, &format!("/v1/photos/{id}/original"), None).await;
    assert_eq!(original.bytes().await.unwrap().as_ref(), jpeg.as_slice());
    let path = format!("/v1/photos/{id}/thumbnail?w=200&h=150");
    let thumbnail = fetch(&server, &path, None).await.bytes().await.unwrap();
    assert_eq!(decoded_size(&thumbnail), (200, 150));
    assert_eq!(
        fetch(&server, &path, None).await.bytes().await.unwrap(),
        thumbnail
    );
    let metrics = server.get("/metrics").await.1;
    assert!(
        metrics.contains("darkroom_thumbnails_total{cache=\"hit\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}
