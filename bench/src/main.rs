//! Benchmark of the delete-learning-user Lambda: throughput against a naive
//! Rust loop, boto3 and a floor, memory, a DELETE_CONCURRENCY sweep and cold
//! start, all on dynalite behind a latency proxy on 127.0.0.1. It writes
//! BENCHMARKS.md at the repository root. `make bench` builds and runs it.

mod child_process;
mod cold_start;
mod dataset;
mod dynalite;
mod dynamodb;
mod environment;
mod proxy;
mod report;
mod runners;
mod runtime_api;
mod settings;
mod stats;
mod suite;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use settings::Settings;

/// The bench's error type: a boxed error whose message names what failed.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> ExitCode {
    let root = repository_root();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = check_prerequisites(&root) {
        eprintln!("bench: {error}");
        return ExitCode::FAILURE;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench: failed to start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    // Every server and child process belongs to the future, so they stop when
    // it completes, whether it succeeded or failed.
    let started = Instant::now();
    match runtime.block_on(run(&settings, &root)) {
        Ok(path) => {
            eprintln!(
                "bench: wrote {} in {:.0} s",
                path.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: &Settings, root: &Path) -> BenchResult<PathBuf> {
    eprintln!("bench: {}", settings.command());
    let environment = environment::Environment::read(root).await;
    let results = suite::run(settings, root).await?;

    let path = root.join("BENCHMARKS.md");
    let page = report::render(settings, &environment, &results);
    std::fs::write(&path, page)
        .map_err(|error| format!("failed to write {}: {error}", path.display()))?;
    for warning in &results.warnings {
        eprintln!("bench: warning: {warning}");
    }
    Ok(path)
}

/// Returns the repository root, the parent of this crate's folder.
fn repository_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Checks that the binaries and tools the bench starts exist, before anything runs.
fn check_prerequisites(root: &Path) -> BenchResult<()> {
    let required = [
        (
            "target/release/bootstrap",
            "build it with `make bench`, which runs `cargo build --release`",
        ),
        (
            ".bench-venv/bin/python",
            "create the bench venv with `make bench`",
        ),
        (
            "node_modules/dynalite/package.json",
            "install dynalite with `npm ci` (`make bench` does it)",
        ),
        (
            "bench/python/bench_handler.py",
            "restore the bench's Python files",
        ),
    ];
    for (path, fix) in required {
        if !root.join(path).exists() {
            return Err(format!("{} is missing: {fix}", root.join(path).display()).into());
        }
    }
    Ok(())
}
