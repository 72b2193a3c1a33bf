//! `darkroom`: self-hosted photo understanding in one binary.

mod analyze;
mod bench;
mod embeddings;
mod index;
mod models_cmd;
mod serve;
mod thumbnails;

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
        then `darkroom analyze PHOTOS...` or `darkroom serve`."
)]
struct Cli {
    /// Darkroom's home: download cache, model repository, ONNX Runtime library, sample photos.
    /// [default: var]
    #[arg(long, env = "DARKROOM_HOME", global = true)]
    home: Option<PathBuf>,
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
    /// Serve the analyze API over HTTP, with a dynamic batcher per model.
    #[command(long_about = serve::LONG_ABOUT)]
    Serve(serve::ServeArgs),
    /// Load-test a running server's analyze API: photos/s, latency percentiles, errors, batch sizes.
    #[command(long_about = bench::LONG_ABOUT)]
    Bench(bench::BenchArgs),
    /// Embeddings kept for every analysed photo: `backfill` computes the missing ones.
    #[command(long_about = embeddings::LONG_ABOUT)]
    Embeddings {
        #[command(subcommand)]
        command: embeddings::EmbeddingsCommand,
    },
    /// The similar-photo index: `rebuild` builds it from every stored embedding.
    #[command(long_about = index::LONG_ABOUT)]
    Index {
        #[command(subcommand)]
        command: index::IndexCommand,
    },
    /// Render a folder of photos into thumbnails, or into a model's exact input images, as the server does.
    #[command(long_about = thumbnails::LONG_ABOUT)]
    Thumbnails(thumbnails::ThumbnailsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = models::Home::new(cli.home.clone().unwrap_or_else(|| PathBuf::from("var")));
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(cli.home, args),
        Command::Analyze(args) => analyze::run(&home, args),
        Command::Models { command } => models_cmd::run(&home, command),
        Command::Bench(args) => bench::run(args),
        Command::Thumbnails(args) => thumbnails::run(&home, args),
        Command::Embeddings { command } => embeddings::run(cli.home, command),
        Command::Index { command } => index::run(cli.home, command),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
