//! `darkroom index rebuild`: builds the similar-photo index (HNSW, see
//! the `vector` crate) from every stored embedding of a model, and writes
//! it under the home, where the search API will load it from.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pipeline::MetaStore;
use vector::{Params, PhotoIndex};

use crate::serve::SettingsArgs;

pub const LONG_ABOUT: &str = "The similar-photo index: an HNSW graph over the embeddings the \
pipeline stores for every analysed photo (inner product of L2-normalised vectors), kept in one \
file under the home (data/index/<model>.hnsw).\n\n\
`darkroom index rebuild` reads every stored embedding of the model from the metadata store \
(the same settings as `darkroom serve`: --config, DARKROOM_*, --set) and writes a new index, \
replacing the old file only once the new one is complete. It costs about 1 ms of one core per \
photo at 100,000 photos (1280 dimensions) and 6.6 KiB of memory and disk per photo.";

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Build the index from every stored embedding, with a progress bar.
    Rebuild(RebuildArgs),
}

#[derive(Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// The embedding model whose vectors are indexed.
    #[arg(long, default_value = "efficientnet-lite0")]
    model: String,
    /// Where to write the index [default: HOME/data/index/MODEL.hnsw].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Where the index of `model` lives under `home`.
pub fn index_path(home: &Path, model: &str) -> PathBuf {
    home.join("data")
        .join("index")
        .join(format!("{model}.hnsw"))
}

pub fn run(home: Option<PathBuf>, command: IndexCommand) -> anyhow::Result<ExitCode> {
    match command {
        IndexCommand::Rebuild(args) => rebuild(home, args),
    }
}

fn rebuild(home: Option<PathBuf>, args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let config = args.settings.load(home, toml::Table::new())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let path = args
        .out
        .clone()
        .unwrap_or_else(|| index_path(&config.home, &args.model));
    let started = Instant::now();
    let index = runtime.block_on(async {
        let store = MetaStore::open(&config.resolved_metadata())
            .await
            .context("opening the metadata store")?;
        let total = store.count_embeddings(&args.model).await?;
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "indexing {pos}/{len} photos [{bar:30}] {per_sec} eta {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        let mut index: Option<PhotoIndex> = None;
        let mut after = 0;
        loop {
            let page = store.embeddings_page(&args.model, after, 1_000).await?;
            let Some(last) = page.last().map(|r| r.0) else {
                break;
            };
            // The graph is built on the blocking pool, a page at a time.
            let mut building = index.take().unwrap_or_else(|| {
                PhotoIndex::new(&args.model, page[0].2.dims(), Params::default())
            });
            let count = page.len() as u64;
            building = tokio::task::spawn_blocking(move || -> anyhow::Result<PhotoIndex> {
                for (_, id, embedding) in &page {
                    building
                        .upsert(id, &embedding.0)
                        .with_context(|| format!("photo {id}"))?;
                }
                Ok(building)
            })
            .await??;
            building.last_seq = last;
            index = Some(building);
            after = last;
            bar.inc(count);
        }
        bar.finish_and_clear();
        anyhow::Ok(index)
    })?;
    let Some(index) = index else {
        println!(
            "no stored embeddings of {}: nothing to index (is the model name right?)",
            args.model
        );
        return Ok(ExitCode::SUCCESS);
    };
    index
        .save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "indexed {} photos of {} in {seconds:.1} s ({:.0} photos/s), {:.1} MiB in memory -> {}",
        index.len(),
        args.model,
        index.len() as f64 / seconds.max(1e-9),
        index.graph().memory_bytes() as f64 / (1 << 20) as f64,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
