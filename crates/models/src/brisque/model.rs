//! The BRISQUE regressor from OpenCV's model files: the feature ranges
//! (`brisque_range_live.yml`) and the ε-SVR with an RBF kernel
//! (`brisque_model_live.yml`, an `opencv_ml_svm` as `cv::ml::SVM::save` writes
//! it), and the prediction that `cv::ml::SVM::predict` makes with them.

use std::path::Path;

use super::filestorage::{self, Node};
use super::nss::FEATURE_COUNT;
use super::BrisqueError;

/// Per-feature minimum and maximum over the training set; features are mapped
/// linearly from [min, max] to [−1, 1] before the SVR (libsvm's `svm-scale`).
#[derive(Debug, Clone)]
pub(crate) struct FeatureRange {
    min: Vec<f64>,
    max: Vec<f64>,
}

impl FeatureRange {
    pub fn scale(&self, features: &[f64]) -> Vec<f64> {
        features
            .iter()
            .zip(self.min.iter().zip(&self.max))
            .map(|(&f, (&lo, &hi))| -1.0 + 2.0 * (f - lo) / (hi - lo))
            .collect()
    }
}

/// `Σ αᵢ · exp(−γ ‖x − svᵢ‖²) − ρ`.
#[derive(Debug, Clone)]
pub(crate) struct Svr {
    gamma: f64,
    rho: f64,
    /// Support vectors, `var_count` values each, row after row.
    support: Vec<f64>,
    alpha: Vec<f64>,
    var_count: usize,
}

impl Svr {
    pub fn predict(&self, x: &[f64]) -> f64 {
        debug_assert_eq!(x.len(), self.var_count);
        let mut sum = -self.rho;
        for (sv, &alpha) in self.support.chunks_exact(self.var_count).zip(&self.alpha) {
            let d2: f64 = sv.iter().zip(x).map(|(s, v)| (s - v) * (s - v)).sum();
            sum += alpha * (-self.gamma * d2).exp();
        }
        sum
    }

    pub fn var_count(&self) -> usize {
        self.var_count
    }
}

fn read(path: &Path) -> Result<Node, BrisqueError> {
    let text = std::fs::read_to_string(path).map_err(|source| BrisqueError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    filestorage::parse(&text).map_err(|e| BrisqueError::Syntax {
        path: path.to_path_buf(),
        line: e.line,
        reason: e.reason,
    })
}

/// Typed access to one parsed file; every error names the file and the key.
struct Doc<'a> {
    path: &'a Path,
}

impl Doc<'_> {
    fn missing(&self, key: &str) -> BrisqueError {
        BrisqueError::Missing {
            path: self.path.to_path_buf(),
            key: key.to_string(),
        }
    }

    fn invalid(&self, reason: String) -> BrisqueError {
        BrisqueError::Invalid {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn node<'n>(
        &self,
        parent: &'n Node,
        prefix: &str,
        key: &str,
    ) -> Result<&'n Node, BrisqueError> {
        parent
            .get(key)
            .ok_or_else(|| self.missing(&format!("{prefix}{key}")))
    }

    fn number(&self, parent: &Node, prefix: &str, key: &str) -> Result<f64, BrisqueError> {
        let node = self.node(parent, prefix, key)?;
        node.as_f64()
            .ok_or_else(|| self.invalid(format!("`{prefix}{key}` is not a number: {node:?}")))
    }

    fn count(&self, parent: &Node, prefix: &str, key: &str) -> Result<usize, BrisqueError> {
        let node = self.node(parent, prefix, key)?;
        node.as_usize()
            .ok_or_else(|| self.invalid(format!("`{prefix}{key}` is not a count: {node:?}")))
    }

    fn text<'n>(&self, parent: &'n Node, prefix: &str, key: &str) -> Result<&'n str, BrisqueError> {
        let node = self.node(parent, prefix, key)?;
        node.as_str()
            .ok_or_else(|| self.invalid(format!("`{prefix}{key}` is not text: {node:?}")))
    }

    fn numbers(&self, node: &Node, name: &str) -> Result<Vec<f64>, BrisqueError> {
        let items = node
            .as_seq()
            .ok_or_else(|| self.invalid(format!("`{name}` is not a sequence")))?;
        items
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.as_f64().filter(|v| v.is_finite()).ok_or_else(|| {
                    self.invalid(format!("`{name}[{i}]` is not a finite number: {n:?}"))
                })
            })
            .collect()
    }
}

/// `brisque_range_live.yml`: `range`, an `!!opencv-matrix` of 2 rows (min,
/// max) × 36 columns.
pub(crate) fn load_range(path: &Path) -> Result<FeatureRange, BrisqueError> {
    let root = read(path)?;
    let doc = Doc { path };
    let range = doc.node(&root, "", "range")?;
    let rows = doc.count(range, "range.", "rows")?;
    let cols = doc.count(range, "range.", "cols")?;
    let dt = doc.text(range, "range.", "dt")?;
    if !matches!(dt, "f" | "d") {
        return Err(doc.invalid(format!("`range.dt` is `{dt}`, expected `f` or `d`")));
    }
    if rows != 2 || cols != FEATURE_COUNT {
        return Err(doc.invalid(format!(
            "`range` is {rows}×{cols}, expected 2×{FEATURE_COUNT}"
        )));
    }
    let data = doc.numbers(doc.node(range, "range.", "data")?, "range.data")?;
    if data.len() != rows * cols {
        return Err(doc.invalid(format!(
            "`range.data` has {} values, expected {}",
            data.len(),
            rows * cols
        )));
    }
    let (min, max) = data.split_at(cols);
    if let Some(i) = (0..cols).find(|&i| max[i] <= min[i]) {
        return Err(doc.invalid(format!(
            "feature {i}: max {} is not above min {}",
            max[i], min[i]
        )));
    }
    Ok(FeatureRange {
        min: min.to_vec(),
        max: max.to_vec(),
    })
}

/// `brisque_model_live.yml`: `opencv_ml_svm` with `svmType: EPS_SVR` (or
/// `NU_SVR`, predicted the same way), `kernel: { type: RBF, gamma }`,
/// `var_count`, `sv_total`, `support_vectors` and one decision function
/// (`sv_count`, `rho`, `alpha`, optional `index`).
pub(crate) fn load_svr(path: &Path) -> Result<Svr, BrisqueError> {
    let root = read(path)?;
    let doc = Doc { path };
    let p = "opencv_ml_svm.";
    let svm = doc.node(&root, "", "opencv_ml_svm")?;
    let svm_type = doc.text(svm, p, "svmType")?;
    if !matches!(svm_type, "EPS_SVR" | "NU_SVR") {
        return Err(doc.invalid(format!(
            "`svmType` is `{svm_type}`, expected EPS_SVR or NU_SVR"
        )));
    }
    let kernel = doc.node(svm, p, "kernel")?;
    let kp = "opencv_ml_svm.kernel.";
    let kernel_type = doc.text(kernel, kp, "type")?;
    if kernel_type != "RBF" {
        return Err(doc.invalid(format!("kernel type is `{kernel_type}`, expected RBF")));
    }
    let gamma = doc.number(kernel, kp, "gamma")?;
    let var_count = doc.count(svm, p, "var_count")?;
    let sv_total = doc.count(svm, p, "sv_total")?;

    let svs = doc
        .node(svm, p, "support_vectors")?
        .as_seq()
        .ok_or_else(|| doc.invalid("`support_vectors` is not a sequence".into()))?;
    if svs.len() != sv_total {
        return Err(doc.invalid(format!(
            "{} support vectors, `sv_total` says {sv_total}",
            svs.len()
        )));
    }
    let mut support = Vec::with_capacity(sv_total * var_count);
    for (i, sv) in svs.iter().enumerate() {
        let values = doc.numbers(sv, &format!("support_vectors[{i}]"))?;
        if values.len() != var_count {
            return Err(doc.invalid(format!(
                "support vector {i} has {} values, `var_count` says {var_count}",
                values.len()
            )));
        }
        support.extend(values);
    }

    let dfs = doc
        .node(svm, p, "decision_functions")?
        .as_seq()
        .ok_or_else(|| doc.invalid("`decision_functions` is not a sequence".into()))?;
    let [df] = dfs else {
        return Err(doc.invalid(format!(
            "{} decision functions, a regressor has 1",
            dfs.len()
        )));
    };
    let dp = "opencv_ml_svm.decision_functions[0].";
    let sv_count = doc.count(df, dp, "sv_count")?;
    let rho = doc.number(df, dp, "rho")?;
    let alpha = doc.numbers(doc.node(df, dp, "alpha")?, "alpha")?;
    if alpha.len() != sv_count {
        return Err(doc.invalid(format!(
            "{} alphas, `sv_count` says {sv_count}",
            alpha.len()
        )));
    }
    // Without `index` the decision function uses the support vectors in order.
    let index: Vec<usize> = match df.get("index") {
        None => (0..sv_count).collect(),
        Some(node) => doc
            .numbers(node, "index")?
            .into_iter()
            .map(|v| v as usize)
            .collect(),
    };
    if index.len() != sv_count || index.iter().any(|&i| i >= sv_total) {
        return Err(doc.invalid(format!(
            "`index` does not pick {sv_count} of the {sv_total} support vectors"
        )));
    }
    let support = index
        .iter()
        .flat_map(|&i| support[i * var_count..(i + 1) * var_count].iter().copied())
        .collect();
    Ok(Svr {
        gamma,
        rho,
        support,
        alpha,
        var_count,
    })
}
