//! The function itself: the release `bootstrap` binary, started fresh for each
//! run and handed one event through the bench's Runtime API.

use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;
use tokio::time::Instant;

use super::{LoggedCalls, Measurement, RunnerContext, lambda_environment, run_timeout};
use crate::BenchResult;
use crate::child_process::{ChildProcess, peak_rss_kib};
use crate::runtime_api::{Outcome, RuntimeApi, Timeline};

/// How long the binary gets from its start to its first request for an event.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the bootstrap binary against `runtime_api` with DELETE_CONCURRENCY set.
pub fn spawn(
    context: &RunnerContext,
    runtime_api: &RuntimeApi,
    delete_concurrency: usize,
) -> BenchResult<ChildProcess> {
    let mut command = Command::new(&context.bootstrap);
    command.env_clear();
    for (name, value) in lambda_environment(runtime_api.address, context) {
        command.env(name, value);
    }
    command.env("DELETE_CONCURRENCY", delete_concurrency.to_string());
    ChildProcess::spawn("the bootstrap binary", command, false)
}

/// Deletes the bench user's `items` items with a fresh function process.
///
/// The time runs from the event handed out to the response posted, so it
/// leaves out the process's init, which the cold-start measurement covers.
pub async fn run(
    context: &RunnerContext,
    items: usize,
    delete_concurrency: usize,
) -> BenchResult<Measurement> {
    let runtime_api = RuntimeApi::start().await?;
    let mut process = spawn(context, &runtime_api, delete_concurrency)?;

    wait_or_exit(&mut process, runtime_api.wait_for_first_next(INIT_TIMEOUT)).await?;
    runtime_api.push_event("bench-request", context.event.clone());
    let timeline = wait_or_exit(
        &mut process,
        runtime_api.wait_for_outcome(run_timeout(items)),
    )
    .await?;

    // The process is still alive, so its high-water mark covers the whole invocation.
    let pid = process
        .pid()
        .ok_or("the bootstrap binary exited before its memory was read")?;
    let peak_rss = peak_rss_kib(pid)?;
    process.stop().await?;

    let (handed_out_at, posted_at) = response_times(&timeline, &process)?;
    let logged = logged_request(&process.stdout()).ok_or_else(|| {
        format!(
            "the bootstrap binary logged no request line\n{}",
            process.output_tail()
        )
    })?;
    let deleted = logged["deleted"].as_u64().unwrap_or(0);

    Ok(Measurement {
        seconds: (posted_at - handed_out_at).as_secs_f64(),
        deleted,
        peak_rss_kib: Some(peak_rss),
        logged_calls: Some(LoggedCalls {
            pages: logged["pages"].as_u64().unwrap_or(0),
            batches: logged["batches"].as_u64().unwrap_or(0),
        }),
    })
}

/// Waits for `waiting`, but fails early with the process's output if the process exits first.
pub async fn wait_or_exit<T>(
    process: &mut ChildProcess,
    waiting: impl Future<Output = BenchResult<T>>,
) -> BenchResult<T> {
    tokio::pin!(waiting);
    loop {
        tokio::select! {
            result = &mut waiting => {
                return result.map_err(|error| {
                    format!("{}: {error}\n{}", process.name(), process.output_tail()).into()
                });
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if let Some(status) = process.try_exit_status() {
                    return Err(format!(
                        "{} exited with {status} during the run\n{}",
                        process.name(),
                        process.output_tail()
                    )
                    .into());
                }
            }
        }
    }
}

/// Checks that the function posted a 204 response and returns when it got the
/// event and when it posted the response.
pub fn response_times(
    timeline: &Timeline,
    process: &ChildProcess,
) -> BenchResult<(Instant, Instant)> {
    let handed_out_at = timeline
        .handed_out_at
        .ok_or("the Runtime API recorded a response but no event handed out")?;
    match &timeline.outcome {
        Some(Outcome::Response { at, body }) if body["statusCode"] == 204 => {
            Ok((handed_out_at, *at))
        }
        Some(Outcome::Response { body, .. }) => Err(format!(
            "{} responded {body} instead of status 204\n{}",
            process.name(),
            process.output_tail()
        )
        .into()),
        Some(Outcome::Error(error)) => Err(format!(
            "{} posted an invocation error: {error}\n{}",
            process.name(),
            process.output_tail()
        )
        .into()),
        Some(Outcome::InitError(error)) => Err(format!(
            "{} posted an init error: {error}\n{}",
            process.name(),
            process.output_tail()
        )
        .into()),
        None => Err(format!("{} posted nothing", process.name()).into()),
    }
}

/// Returns the function's one log line per request: the JSON line with a `status` field.
fn logged_request(stdout: &str) -> Option<Value> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line.get("status").is_some())
}
