//! `darkroom serve` as an operator runs it: settings layered from a file, the
//! environment and flags; a request over loopback; SIGTERM stops it cleanly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use models::Home;

fn home() -> Home {
    let home = Home::discover();
    assert!(
        home.models().is_dir(),
        "no model repository at {}: run `darkroom models fetch` first",
        home.models().display()
    );
    home
}

#[test]
fn print_config_layers_file_then_environment_then_flags() {
    let dir = std::env::temp_dir().join(format!("darkroom-serve-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("darkroom.toml");
    std::fs::write(
        &file,
        "cpu_workers = 3\nintra_threads = 3\n[limits]\nmax_pixels = 1000\n",
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
        .env("DARKROOM_CPU_WORKERS", "5")
        .env("DARKROOM_LIMITS__MAX_IMAGE_BYTES", "12345")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(
        config["cpu_workers"].as_integer(),
        Some(5),
        "environment over file"
    );
    assert_eq!(
        config["intra_threads"].as_integer(),
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

/// One HTTP/1.1 request on a fresh connection; returns the status and body.
fn http(address: &str, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

#[test]
fn serves_a_photo_and_stops_on_sigterm() {
    let home = home();
    let mut child = Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .args(["--home"])
        .arg(&home.root)
        .args(["serve", "--listen", "127.0.0.1:0", "--cpu-workers", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut address = None;
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.split("listening on http://").nth(1) {
            address = rest.split_whitespace().next().map(String::from);
        }
        if line.contains("ready in") {
            break;
        }
        line.clear();
    }
    let address = address.expect("the listening address on stderr");
    let photo = std::fs::read(home.samples().join("coffee.png")).unwrap();
    let mut request = format!(
        "POST /v1/analyze?id=mug HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        photo.len()
    )
    .into_bytes();
    request.extend_from_slice(&photo);
    let (status, body) = http(&address, &request);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"photoId\":\"mug\"") && body.contains("espresso"),
        "{body}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("stopped"), "{rest}");
}
