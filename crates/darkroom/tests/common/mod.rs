//! What the binary's tests share: the built home, running `darkroom`, and a
//! scratch folder per test.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use models::Home;

pub fn home() -> Home {
    Home::discover_built()
}

/// Runs the built binary against `home` and waits for it.
pub fn darkroom(home: &Home, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .arg("--home")
        .arg(&home.root)
        .args(args)
        .output()
        .expect("darkroom runs")
}

/// [`darkroom`], which must succeed: its stdout and stderr.
pub fn darkroom_ok(home: &Home, args: &[&str]) -> (String, String) {
    let out = darkroom(home, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "darkroom {args:?}: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// An empty folder of this test process's own.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("darkroom-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One HTTP/1.1 request on a fresh connection; returns the status and body.
pub fn http_bytes(address: &str, request: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let status = String::from_utf8_lossy(&response[9..12]).parse().unwrap();
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(Vec::new(), |at| response[at + 4..].to_vec());
    (status, body)
}

pub fn http(address: &str, request: &[u8]) -> (u16, String) {
    let (status, body) = http_bytes(address, request);
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A running `darkroom serve` on a free port; killed when dropped. Its
/// stderr is read on a thread (so the pipe never fills) into `stderr_text`.
pub struct Served {
    pub child: Child,
    pub address: String,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Starts `darkroom --home HOME serve --listen 127.0.0.1:0 ARGS` and
    /// waits until it says it is ready.
    pub fn start(home: &Home, args: &[&str]) -> Served {
        Served::start_with_env(home, args, &[])
    }

    /// [`Served::start`] with these environment variables set.
    pub fn start_with_env(home: &Home, args: &[&str], envs: &[(&str, &str)]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_darkroom"))
            .envs(envs.iter().copied())
            .args(["--home"])
            .arg(&home.root)
            .args(["serve", "--listen", "127.0.0.1:0", "--cpu-workers", "1"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut lines = BufReader::new(pipe);
            let mut line = String::new();
            while lines.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let started = Instant::now();
        let address = loop {
            let text = stderr.lock().unwrap().clone();
            if text.contains("ready in") {
                let rest = text.split("listening on http://").nth(1).expect("address");
                break rest.split_whitespace().next().unwrap().to_string();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("darkroom serve exited with {status}:\n{text}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "darkroom serve not ready:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Served {
            child,
            address,
            stderr,
            reader: Some(reader),
        }
    }

    /// Everything the process wrote to stderr; after it exited, all of it.
    pub fn stderr_text(&mut self) -> String {
        if let Ok(Some(_)) = self.child.try_wait() {
            if let Some(reader) = self.reader.take() {
                let _ = reader.join();
            }
        }
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL, as a lost spot instance or an OOM kill would.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
