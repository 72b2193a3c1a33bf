//! `darkroom`: self-hosted photo understanding in one binary.

mod analyze;
mod models_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "darkroom",
    version,
    about = "Self-hosted photo understanding: concepts, faces and model releases, quality, captions, embeddings.",
    long_about = "Self-hosted photo understanding: concepts, faces and model releases, quality, captions, embeddings.\n\n\
        Start with `darkroom models fetch` (downloads pinned packages, builds the model repository under the home), \
        then `darkroom analyze PHOTOS...`."
)]
struct Cli {
    /// Darkroom's home: download cache, model repository, ONNX Runtime library, sample photos.
    #[arg(long, env = "DARKROOM_HOME", default_value = "var", global = true)]
    home: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyze photos (files or folders, recursively; JPEG, PNG, WebP): one JSON line per photo on stdout.
    Analyze(analyze::AnalyzeArgs),
    /// Build, list and verify the model repository.
    Models {
        #[command(subcommand)]
        command: models_cmd::ModelsCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = models::Home::new(cli.home);
    let outcome = match cli.command {
        Command::Analyze(args) => analyze::run(&home, args),
        Command::Models { command } => models_cmd::run(&home, command),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
