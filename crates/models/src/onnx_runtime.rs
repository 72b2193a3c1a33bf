//! The ONNX Runtime backend, loaded at run time (`load-dynamic`) from the
//! `libonnxruntime.so` that the set-up step takes out of the PyPI wheel.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor as OrtTensor;

use crate::backend::{Backend, Outputs, Tensor};
use crate::error::{ModelError, Result};
use crate::home::ORT_VERSION;
use crate::repository::ModelEntry;

/// One environment per process: ONNX Runtime refuses a second.
static ENVIRONMENT: OnceLock<std::result::Result<(PathBuf, Environment), String>> = OnceLock::new();

/// Loads the runtime library once. Later calls return the first outcome.
pub fn init_runtime(library: &Path) -> Result<()> {
    let outcome = ENVIRONMENT.get_or_init(|| {
        if !library.is_file() {
            return Err(format!(
                "{} not found; run `darkroom models fetch` (it takes the library out of the onnxruntime=={ORT_VERSION} wheel)",
                library.display()
            ));
        }
        let builder = ort::init_from(library).map_err(|e| format!("loading {}: {e}", library.display()))?;
        let environment = builder
            .with_name("darkroom")
            .build()
            .map_err(|e| format!("creating the ONNX Runtime environment: {e}"))?;
        Ok((library.to_path_buf(), environment))
    });
    outcome
        .as_ref()
        .map(|_| ())
        .map_err(|e| ModelError::Runtime(e.clone()))
}

fn environment() -> Result<&'static Environment> {
    match ENVIRONMENT.get() {
        Some(Ok((_, env))) => Ok(env),
        Some(Err(e)) => Err(ModelError::Runtime(e.clone())),
        None => Err(ModelError::Runtime(
            "ONNX Runtime not initialised: call init_runtime first".into(),
        )),
    }
}

/// One model's ONNX sessions (its instances). `Session::run` needs `&mut`, so
/// each session sits behind its own mutex; a call takes the first free one, so
/// `instances` batches of the same model can run at once.
pub struct OrtBackend {
    name: String,
    input: String,
    /// One per instance; each guards a session that runs one call at a time.
    sessions: Vec<Mutex<Session>>,
    /// Round-robin start for the wait when every session is busy.
    next: AtomicUsize,
    outputs: Vec<String>,
}

impl OrtBackend {
    /// Opens the model's ONNX file `instances` times, each session running
    /// with `intra_threads` threads per call.
    pub fn load(entry: &ModelEntry, intra_threads: usize, instances: usize) -> Result<OrtBackend> {
        let spec = entry
            .config
            .onnx
            .as_ref()
            .ok_or_else(|| ModelError::Config {
                path: entry.dir.clone(),
                reason: "model has no [onnx] section".into(),
            })?;
        let path = entry.path(&spec.file);
        let rt = |e: ort::Error| ModelError::Runtime(format!("{}: {e}", path.display()));
        let open = || -> Result<Session> {
            Session::builder(environment()?)
                .map_err(rt)?
                .with_intra_threads(intra_threads.max(1))
                .map_err(|e| rt(e.into()))?
                .with_inter_threads(1)
                .map_err(|e| rt(e.into()))?
                .commit_from_file(&path)
                .map_err(rt)
        };
        let sessions = (0..instances.max(1))
            .map(|_| open())
            .collect::<Result<Vec<_>>>()?;
        let outputs = sessions[0]
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(OrtBackend {
            name: entry.config.name.clone(),
            input: spec.input.clone(),
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
            outputs,
        })
    }
}

impl OrtBackend {
    /// The first idle session, or else wait for one in round-robin order.
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        for session in &self.sessions {
            if let Ok(guard) = session.try_lock() {
                return guard;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        self.sessions[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backend for OrtBackend {
    fn infer(&self, input: Tensor) -> Result<Outputs> {
        let rt = |e: ort::Error| ModelError::Runtime(format!("{}: {e}", self.name));
        let value = OrtTensor::from_array((input.shape.clone(), input.data)).map_err(rt)?;
        let mut session = self.session();
        let outputs = session
            .run(ort::inputs![self.input.as_str() => value])
            .map_err(rt)?;
        let mut result = Outputs::new();
        for name in &self.outputs {
            let Some(value) = outputs.get(name) else {
                continue;
            };
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(rt)?;
            let shape = shape.iter().map(|&d| d.max(0) as usize).collect();
            result.insert(name.clone(), Tensor::new(shape, data.to_vec()));
        }
        Ok(result)
    }
}
