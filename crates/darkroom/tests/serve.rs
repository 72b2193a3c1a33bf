//! `darkroom serve` as an operator runs it: settings layered from a file, the
//! environment and flags; a request over loopback; SIGTERM stops it cleanly.

mod common;

use std::process::Command;

use common::*;

#[test]
fn print_config_layers_file_then_environment_then_flags() {
    let dir = std::env::temp_dir().join(format!("darkroom-serve-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("darkroom.toml");
    std::fs::write(
        &file,
        "[engine]\ncpu_workers = 3\nintra_threads = 3\n[limits]\nmax_pixels = 1000\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .args([
            "--intra-threads",
            "4",
            "--set",
            "limits.max_queued_images=512",
        ])
        .env("DARKROOM_ENGINE__CPU_WORKERS", "5")
        .env("DARKROOM_LIMITS__MAX_IMAGE_BYTES", "12345")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let engine = config["engine"].as_table().unwrap();
    assert_eq!(
        engine["cpu_workers"].as_integer(),
        Some(5),
        "environment over file"
    );
    assert_eq!(
        engine["intra_threads"].as_integer(),
        Some(4),
        "flag over file"
    );
    let limits = config["limits"].as_table().unwrap();
    assert_eq!(
        limits["max_pixels"].as_integer(),
        Some(1000),
        "file over default"
    );
    assert_eq!(limits["max_image_bytes"].as_integer(), Some(12345));
    assert_eq!(limits["max_queued_images"].as_integer(), Some(512));

    let out = Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .args(["serve", "--print-config"])
        .env("DARKROOM_LIMITS__MAX_IMAGE_BYTE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DARKROOM_LIMITS__MAX_IMAGE_BYTE"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn training_thumbnails_are_byte_for_byte_what_the_api_serves() {
    for decode in ["model", "fast"] {
        training_thumbnails_match_the_api(decode);
    }
}

/// The CLI's thumbnails against a server's, both decoding as `decode` says.
fn training_thumbnails_match_the_api(decode: &str) {
    let home = home();
    let scratch = std::env::temp_dir().join(format!(
        "darkroom-serve-thumbs-{decode}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    let photos = scratch.join("in");
    std::fs::create_dir_all(&photos).unwrap();
    let photo = std::fs::read(home.camera_photos().join("LadyBird.jpg")).unwrap();
    std::fs::write(photos.join("ladybird.jpg"), &photo).unwrap();
    let blobs = format!("storage.path=\"{}\"", scratch.join("blobs").display());
    let db = format!(
        "metadata.path=\"{}\"",
        scratch.join("darkroom.db").display()
    );
    let served = Served::start(&home, &["--set", &blobs, "--set", &db, "--decode", decode]);

    let (status, body) = http(&served.address, &post("/v1/photos", "image/jpeg", &photo));
    assert_eq!(status, 202, "{body}");
    let stored: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = stored["id"].as_str().unwrap();

    let cases: [(&[&str], &str, &str); 2] = [
        (
            &["--preset", "model:efficientnet-lite0", "--decode", decode],
            "model",
            "preset=model:efficientnet-lite0",
        ),
        (
            &["--width", "256", "--height", "256"],
            "small",
            "w=256&h=256",
        ),
    ];
    for (args, out, query) in cases {
        let out = scratch.join(out);
        let cli = Command::new(env!("CARGO_BIN_EXE_darkroom"))
            .arg("--home")
            .arg(&home.root)
            .arg("thumbnails")
            .args(args)
            .arg(&photos)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            cli.status.success(),
            "{}",
            String::from_utf8_lossy(&cli.stderr)
        );
        let written = std::fs::read_dir(&out)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let (status, served_bytes) = http_bytes(
            &served.address,
            &get(&format!("/v1/photos/{id}/thumbnail?{query}")),
        );
        assert_eq!(status, 200);
        assert!(
            std::fs::read(&written).unwrap() == served_bytes,
            "{decode}: {query}: the CLI's {} differs from the API's thumbnail",
            written.display()
        );
    }
    drop(served);
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn serves_a_photo_and_stops_on_sigterm() {
    let home = home();
    let scratch = std::env::temp_dir().join(format!("darkroom-serve-term-{}", std::process::id()));
    let blobs = format!("storage.path=\"{}\"", scratch.join("blobs").display());
    let db = format!(
        "metadata.path=\"{}\"",
        scratch.join("darkroom.db").display()
    );
    let mut served = Served::start(&home, &["--set", &blobs, "--set", &db]);
    let photo = std::fs::read(home.samples().join("coffee.png")).unwrap();
    let (status, body) = http(
        &served.address,
        &post("/v1/analyze?id=mug", "image/png", &photo),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"photoId\":\"mug\"") && body.contains("espresso"),
        "{body}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = served.child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let rest = served.stderr_text();
    assert!(rest.contains("stopped"), "{rest}");
    let _ = std::fs::remove_dir_all(&scratch);
}
