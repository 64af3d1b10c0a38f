//! boto3, as a Python Lambda would delete the items: `bench/python/boto3_delete.py`
//! run with the bench venv's Python, which times its own query and delete section.

use serde_json::Value;
use tokio::process::Command;

use super::{Measurement, RunnerContext, aws_environment, run_timeout};
use crate::BenchResult;
use crate::child_process::ChildProcess;
use crate::dataset::BENCH_USER;

/// Deletes the bench user's items with boto3 and returns the script's own timing.
pub async fn run(context: &RunnerContext, items: usize) -> BenchResult<Measurement> {
    let mut command = python_command(context);
    command
        .arg(context.python_scripts.join("boto3_delete.py"))
        .env("BENCH_USER_ID", BENCH_USER);
    let mut process = ChildProcess::spawn("the boto3 script", command, false)?;

    let status = process.wait_for_exit(run_timeout(items)).await?;
    if !status.success() {
        return Err(format!(
            "the boto3 script failed with {status}\n{}",
            process.output_tail()
        )
        .into());
    }

    let stdout = process.stdout();
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| format!("the boto3 script printed no JSON result: {stdout:?}"))?;
    let (Some(deleted), Some(seconds)) = (result["deleted"].as_u64(), result["seconds"].as_f64())
    else {
        return Err(format!("the boto3 script printed an invalid result: {result}").into());
    };

    Ok(Measurement {
        seconds,
        deleted,
        peak_rss_kib: None,
        logged_calls: None,
    })
}

/// Builds a command for the bench venv's Python in the scripts folder, with
/// an empty environment plus the AWS settings.
pub fn python_command(context: &RunnerContext) -> Command {
    let mut command = Command::new(&context.python);
    command
        .current_dir(&context.python_scripts)
        .env_clear()
        // Keeps __pycache__ folders out of the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    for (name, value) in aws_environment(context) {
        command.env(name, value);
    }
    command
}
