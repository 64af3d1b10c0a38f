//! The machine and tool versions that the report states next to the figures.

use std::path::Path;

use serde_json::Value;
use tokio::process::Command;

use crate::child_process::{self, ChildProcess};
use crate::dynalite;

/// Facts about the machine and the tools. A fact that could not be read is
/// `unknown (<reason>)`, because a missing detail should not cost a finished run.
#[derive(Debug, Clone)]
pub struct Environment {
    pub date_utc: String,
    pub cpu_model: String,
    pub cores: String,
    pub memory: String,
    pub os: String,
    pub kernel: String,
    pub commit: String,
    pub rustc: String,
    pub dynalite: String,
    pub python: String,
    pub boto3: String,
    pub awslambdaric: String,
}

impl Environment {
    /// Reads every fact, running a few short commands.
    pub async fn read(root: &Path) -> Self {
        let python_versions = python_versions(root).await;
        let python_fact = |name: &str| match &python_versions {
            Ok(versions) => versions[name]
                .as_str()
                .map_or_else(|| format!("unknown (no {name})"), str::to_owned),
            Err(error) => format!("unknown ({error})"),
        };

        Self {
            date_utc: known(
                child_process::command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).await,
            ),
            cpu_model: known(cpu_model()),
            cores: std::thread::available_parallelism().map_or_else(
                |error| format!("unknown ({error})"),
                |cores| cores.to_string(),
            ),
            memory: known(memory_total()),
            os: known(os_name()),
            kernel: known(read_trimmed("/proc/sys/kernel/osrelease")),
            commit: known(commit(root).await),
            rustc: known(child_process::command_output("rustc", &["--version"]).await),
            dynalite: known(dynalite::installed_version(root)),
            python: python_fact("python"),
            boto3: python_fact("boto3"),
            awslambdaric: python_fact("awslambdaric"),
        }
    }
}

fn known(fact: crate::BenchResult<String>) -> String {
    fact.unwrap_or_else(|error| format!("unknown ({error})"))
}

fn read_trimmed(path: &str) -> crate::BenchResult<String> {
    Ok(std::fs::read_to_string(path)
        .map_err(|error| format!("failed to read {path}: {error}"))?
        .trim()
        .to_owned())
}

fn cpu_model() -> crate::BenchResult<String> {
    let cpuinfo = read_trimmed("/proc/cpuinfo")?;
    cpuinfo
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim() == "model name").then(|| value.trim().to_owned())
        })
        .ok_or_else(|| "/proc/cpuinfo has no model name".into())
}

fn memory_total() -> crate::BenchResult<String> {
    let meminfo = read_trimmed("/proc/meminfo")?;
    let kib: f64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("/proc/meminfo has no MemTotal")?;
    Ok(format!("{:.1} GiB", kib / 1024.0 / 1024.0))
}

fn os_name() -> crate::BenchResult<String> {
    let release = read_trimmed("/etc/os-release")?;
    release
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|name| name.trim_matches('"').to_owned())
        .ok_or_else(|| "/etc/os-release has no PRETTY_NAME".into())
}

async fn commit(root: &Path) -> crate::BenchResult<String> {
    let root_text = root.to_string_lossy();
    let head =
        child_process::command_output("git", &["-C", &root_text, "rev-parse", "--short", "HEAD"])
            .await?;
    let status =
        child_process::command_output("git", &["-C", &root_text, "status", "--porcelain"]).await?;
    Ok(if status.is_empty() {
        head
    } else {
        format!("{head} with uncommitted changes")
    })
}

/// Returns the Python, boto3 and awslambdaric versions of the bench venv.
async fn python_versions(root: &Path) -> crate::BenchResult<Value> {
    let mut command = Command::new(root.join(".bench-venv/bin/python"));
    command
        .env_clear()
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args([
            "-c",
            "import json, platform\n\
         from importlib.metadata import version\n\
         print(json.dumps({'python': platform.python_version(), \
         'boto3': version('boto3'), 'awslambdaric': version('awslambdaric')}))",
        ]);
    let mut process = ChildProcess::spawn("the bench venv's Python", command, false)?;
    let status = process
        .wait_for_exit(std::time::Duration::from_secs(30))
        .await?;
    if !status.success() {
        return Err(format!("the version query failed with {status}").into());
    }
    serde_json::from_str(process.stdout().trim())
        .map_err(|error| format!("the version query printed invalid JSON: {error}").into())
}
