//! What is fuzzed, and what counts as a failure: a panic anywhere; a decode
//! that "succeeds" with pixels that do not add up; an `internal_error` from
//! a decoder (the code for a bug, not for bad input); a body or parameter
//! refused with a 5xx instead of a 4xx. A refusal with a stable code is the
//! right answer to a broken file, and is counted by code.

use std::panic::{catch_unwind, AssertUnwindSafe};

use base64::Engine as _;
use imaging::{DecodeRequest, Limits, ThumbnailSpec};
use server::config::{LimitsConfig, ThumbnailsConfig};

use crate::mutate::{chunks, mutate, mutate_text};
use crate::rng::Rng;

/// A fuzz target: one entry point of Darkroom that reads untrusted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// `imaging::decode` at full size (JPEG, PNG and WebP decoders).
    Decode,
    /// `imaging::decode` shrunk on load to 64×64 or more (libjpeg-turbo's scaled IDCT).
    DecodeShrunk,
    /// `imaging::probe`: the header walk and the limits.
    Probe,
    /// `imaging::check_complete`: the whole-file check uploads go through.
    Complete,
    /// `imaging::orientation_from_exif` on EXIF blocks taken from the seeds.
    Exif,
    /// `imaging::render`: a 64×64 JPEG thumbnail.
    Thumbnail,
    /// `POST /v1/analyze`'s JSON reader (base64 images).
    AnalyzeJson,
    /// `POST /v1/analyze`'s multipart reader.
    AnalyzeMultipart,
    /// `POST /v1/photos`' JSON and multipart readers.
    Upload,
    /// `GET /v1/photos/{id}/thumbnail`'s query parser.
    ThumbnailQuery,
}

impl Target {
    pub const ALL: [Target; 10] = [
        Target::Decode,
        Target::DecodeShrunk,
        Target::Probe,
        Target::Complete,
        Target::Exif,
        Target::Thumbnail,
        Target::AnalyzeJson,
        Target::AnalyzeMultipart,
        Target::Upload,
        Target::ThumbnailQuery,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Decode => "decode",
            Target::DecodeShrunk => "decode_shrunk",
            Target::Probe => "probe",
            Target::Complete => "check_complete",
            Target::Exif => "exif",
            Target::Thumbnail => "thumbnail",
            Target::AnalyzeJson => "analyze_json",
            Target::AnalyzeMultipart => "analyze_multipart",
            Target::Upload => "upload",
            Target::ThumbnailQuery => "thumbnail_query",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Read (decoded, parsed) without complaint.
    Accepted,
    /// Refused with this stable code.
    Refused(&'static str),
    /// A failure: what went wrong.
    Failure(String),
}

/// A real file the mutations start from.
#[derive(Debug, Clone)]
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Everything a run reads from: the seed photos, the EXIF blocks in them,
/// and the limits the readers are held to.
pub struct Inputs {
    pub photos: Vec<Seed>,
    exif: Vec<Vec<u8>>,
    limits: Limits,
    api_limits: LimitsConfig,
    thumbnails: ThumbnailsConfig,
    runtime: tokio::runtime::Runtime,
}

const QUERIES: [&str; 6] = [
    "w=256&h=256&fit=cover&filter=lanczos3&format=jpeg&q=85",
    "w=64",
    "h=100&fit=contain&format=webp",
    "w=300&h=200&fit=fill&filter=nearest&format=png",
    "preset=small",
    "preset=model:efficientnet-lite0",
];

const BOUNDARY: &str = "darkroomFuzzBoundary";

impl Inputs {
    pub fn new(photos: Vec<Seed>) -> anyhow::Result<Inputs> {
        anyhow::ensure!(!photos.is_empty(), "no seed photos");
        let exif = photos.iter().filter_map(|s| exif_block(&s.bytes)).collect();
        let mut thumbnails = ThumbnailsConfig::default();
        thumbnails.presets.insert(
            "small".into(),
            serde_json::from_str("{\"width\": 128, \"height\": 128}")?,
        );
        Ok(Inputs {
            photos,
            exif,
            limits: Limits::default(),
            api_limits: LimitsConfig::default(),
            thumbnails,
            runtime: tokio::runtime::Builder::new_current_thread().build()?,
        })
    }

    /// Case `case` of a run seeded with `seed`: its target, the seed's name
    /// and the mutated input. The same arguments give the same case.
    pub fn case(&self, seed: u64, case: u64, targets: &[Target]) -> (Target, String, Vec<u8>) {
        let mut rng = Rng::for_case(seed, case);
        let target = targets[(case % targets.len() as u64) as usize];
        let photo = rng.pick(&self.photos);
        let other = rng.pick(&self.photos);
        let input = match target {
            Target::Exif if !self.exif.is_empty() => {
                let block = rng.pick(&self.exif);
                mutate(block, &other.bytes, &mut rng).0
            }
            Target::AnalyzeJson => mutate_text(&analyze_json(&photo.bytes), &mut rng),
            Target::AnalyzeMultipart => mutate(&multipart(&photo.bytes, "topK"), &[], &mut rng).0,
            Target::Upload => {
                let body = if rng.chance(1, 2) {
                    upload_json(&photo.bytes)
                } else {
                    multipart(&photo.bytes, "uploaderId")
                };
                mutate(&body, &[], &mut rng).0
            }
            Target::ThumbnailQuery => mutate_text(rng.pick(&QUERIES).as_bytes(), &mut rng),
            _ => mutate(&photo.bytes, &other.bytes, &mut rng).0,
        };
        (target, photo.name.clone(), input)
    }

    /// Runs one input through its target, catching panics.
    pub fn run(&self, target: Target, input: &[u8]) -> Outcome {
        match catch_unwind(AssertUnwindSafe(|| self.run_unguarded(target, input))) {
            Ok(outcome) => outcome,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                Outcome::Failure(format!("panic: {message}"))
            }
        }
    }

    fn run_unguarded(&self, target: Target, input: &[u8]) -> Outcome {
        let limits = self.limits;
        match target {
            Target::Decode | Target::DecodeShrunk => {
                let req = DecodeRequest {
                    limits,
                    min_size: (target == Target::DecodeShrunk).then_some((64, 64)),
                };
                match imaging::decode(input, &req) {
                    Ok(d) if !d.image.is_consistent() || d.image.width == 0 => {
                        Outcome::Failure(format!("decoded to an inconsistent {:?}", d.image))
                    }
                    Ok(_) => Outcome::Accepted,
                    Err(e) => imaging_refusal(&e),
                }
            }
            Target::Probe => match imaging::probe(input, &limits) {
                Ok(h) if h.width == 0 || h.height == 0 || !(1..=8).contains(&h.orientation) => {
                    Outcome::Failure(format!("probed an impossible header {h:?}"))
                }
                Ok(_) => Outcome::Accepted,
                Err(e) => imaging_refusal(&e),
            },
            Target::Complete => match imaging::check_complete(input) {
                Ok(()) => Outcome::Accepted,
                Err(e) => imaging_refusal(&e),
            },
            Target::Exif => match imaging::orientation_from_exif(input) {
                1..=8 => Outcome::Accepted,
                o => Outcome::Failure(format!("orientation {o}")),
            },
            Target::Thumbnail => {
                let spec: ThumbnailSpec =
                    serde_json::from_str("{\"width\": 64, \"height\": 64}").expect("a valid spec");
                match imaging::render(input, &limits, &spec) {
                    Ok(t) if t.bytes.is_empty() => Outcome::Failure("an empty thumbnail".into()),
                    Ok(_) => Outcome::Accepted,
                    Err(e) => imaging_refusal(&e),
                }
            }
            Target::AnalyzeJson | Target::AnalyzeMultipart | Target::Upload => {
                let content_type = if input.first() == Some(&b'-') {
                    format!("multipart/form-data; boundary={BOUNDARY}")
                } else {
                    "application/json".to_string()
                };
                let body = bytes::Bytes::copy_from_slice(input);
                let limits = &self.api_limits;
                let read = self.runtime.block_on(async {
                    if target == Target::Upload {
                        server::api::readers::upload(body, &content_type, limits).await
                    } else {
                        server::api::readers::analyze(body, &content_type, limits).await
                    }
                });
                match read {
                    Ok(_) => Outcome::Accepted,
                    Err(e) => api_refusal(&e),
                }
            }
            Target::ThumbnailQuery => {
                let raw = String::from_utf8_lossy(input);
                match server::photos::thumbnail_query(&raw, &self.thumbnails) {
                    Ok(_) => Outcome::Accepted,
                    Err(e) => api_refusal(&e),
                }
            }
        }
    }
}

fn imaging_refusal(e: &imaging::ImagingError) -> Outcome {
    match e.code() {
        "internal_error" => Outcome::Failure(format!("internal error: {e}")),
        code => Outcome::Refused(code),
    }
}

fn api_refusal(e: &server::error::ApiError) -> Outcome {
    if e.status().is_server_error() {
        Outcome::Failure(format!("{} {}: {e}", e.status(), e.code()))
    } else {
        Outcome::Refused(e.code())
    }
}

/// The EXIF block (after `Exif\0\0`) of a JPEG's APP1 or a PNG's eXIf chunk.
fn exif_block(b: &[u8]) -> Option<Vec<u8>> {
    chunks(b).into_iter().find_map(|c| {
        let chunk = &b[c.range];
        if let Some(rest) = chunk.strip_prefix(&[0xFF, 0xE1]) {
            return rest.get(2..)?.strip_prefix(b"Exif\0\0").map(<[u8]>::to_vec);
        }
        (chunk.get(4..8) == Some(b"eXIf")).then(|| chunk[8..chunk.len() - 4].to_vec())
    })
}

fn analyze_json(photo: &[u8]) -> Vec<u8> {
    let data = base64::engine::general_purpose::STANDARD.encode(photo);
    serde_json::json!({"images": [{"id": "a", "data": data}], "topK": 5, "include": ["embedding"]})
        .to_string()
        .into_bytes()
}

fn upload_json(photo: &[u8]) -> Vec<u8> {
    let data = base64::engine::general_purpose::STANDARD.encode(photo);
    serde_json::json!({"data": data, "uploader": {"id": "u1", "releaseOnFile": true}})
        .to_string()
        .into_bytes()
}

/// A multipart body: the photo as a file part, and one text field.
fn multipart(photo: &[u8], field: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(photo.len() + 512);
    b.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n5\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.jpg\"\r\n\
             Content-Type: image/jpeg\r\n\r\n"
        )
        .as_bytes(),
    );
    b.extend_from_slice(photo);
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}
