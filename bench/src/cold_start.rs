//! Cold start: a fresh function process, timed from its spawn to its first
//! request for an event and to its first posted response.
//!
//! The event is queued before the spawn, so the process gets it with its first
//! request, and the second time covers init plus one small deletion.

use std::fmt;

use tokio::process::Command;
use tokio::time::Instant;

use crate::BenchResult;
use crate::child_process::ChildProcess;
use crate::dataset::Dataset;
use crate::runners::{RunnerContext, boto3, lambda_environment, ours, run_timeout};
use crate::runtime_api::RuntimeApi;
use crate::settings::{COLD_START_ITEMS, COLD_START_REPEATS};

/// The functions whose cold starts are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// The release `bootstrap` binary.
    Rust,
    /// `bench_handler.handler` under awslambdaric.
    Python,
}

impl fmt::Display for Function {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Function::Rust => "ours (Rust bootstrap)",
            Function::Python => "Python handler (awslambdaric + boto3)",
        })
    }
}

/// The two times of one cold start, in milliseconds after the spawn.
#[derive(Debug, Clone, Copy)]
pub struct ColdStart {
    pub to_first_next_ms: f64,
    pub to_response_ms: f64,
}

/// Every cold start of both functions, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct ColdStarts {
    pub rust: Vec<ColdStart>,
    pub python: Vec<ColdStart>,
}

/// Starts each function COLD_START_REPEATS times, alternating between them so
/// that a slow phase of the machine affects both alike.
pub async fn measure(context: &RunnerContext, dataset: &Dataset) -> BenchResult<ColdStarts> {
    let mut results = ColdStarts::default();
    for round in 1..=COLD_START_REPEATS {
        for function in [Function::Rust, Function::Python] {
            dataset.seed_bench_user(COLD_START_ITEMS).await?;
            let sample = start_once(context, function)
                .await
                .map_err(|error| format!("cold start {round} of {function}: {error}"))?;
            dataset
                .check_after_run(&format!("the cold start of {function}"))
                .await?;
            match function {
                Function::Rust => results.rust.push(sample),
                Function::Python => results.python.push(sample),
            }
        }
    }
    Ok(results)
}

async fn start_once(context: &RunnerContext, function: Function) -> BenchResult<ColdStart> {
    let runtime_api = RuntimeApi::start().await?;
    runtime_api.push_event("cold-start-request", context.event.clone());

    let spawned = Instant::now();
    let mut process = match function {
        Function::Rust => ours::spawn(context, &runtime_api, context.concurrency)?,
        Function::Python => spawn_python(context, &runtime_api)?,
    };

    let first_next_at = ours::wait_or_exit(
        &mut process,
        runtime_api.wait_for_first_next(ours::INIT_TIMEOUT),
    )
    .await?;
    let timeline = ours::wait_or_exit(
        &mut process,
        runtime_api.wait_for_outcome(run_timeout(COLD_START_ITEMS)),
    )
    .await?;
    process.stop().await?;
    let (_, posted_at) = ours::response_times(&timeline, &process)?;

    Ok(ColdStart {
        to_first_next_ms: (first_next_at - spawned).as_secs_f64() * 1000.0,
        to_response_ms: (posted_at - spawned).as_secs_f64() * 1000.0,
    })
}

/// Starts the Python handler with awslambdaric, as Lambda's Python runtime
/// does: `python -m awslambdaric <module>.<function>`.
fn spawn_python(context: &RunnerContext, runtime_api: &RuntimeApi) -> BenchResult<ChildProcess> {
    let mut command: Command = boto3::python_command(context);
    command.args(["-m", "awslambdaric", "bench_handler.handler"]);
    for (name, value) in lambda_environment(runtime_api.address, context) {
        command.env(name, value);
    }
    ChildProcess::spawn("the Python handler", command, false)
}
