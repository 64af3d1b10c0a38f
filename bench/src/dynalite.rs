//! The dynalite server that every runner deletes from, started with the
//! repository's own `tests/support/dynalite.js`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::BenchResult;
use crate::child_process::ChildProcess;

/// How long dynalite gets to print its port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running dynalite server on 127.0.0.1. It exits when this handle drops:
/// the handle kills it, and the script also exits when its stdin closes.
pub struct Dynalite {
    pub address: SocketAddr,
    _process: ChildProcess,
}

impl Dynalite {
    /// Starts dynalite from the repository's node_modules and waits for its port.
    pub async fn start(root: &Path) -> BenchResult<Self> {
        let module = root.join("node_modules/dynalite/package.json");
        if !module.exists() {
            return Err(format!(
                "dynalite is not installed in {}: run `npm ci` in the repository root (`make bench` does it)",
                root.display()
            )
            .into());
        }

        let mut command = Command::new("node");
        command
            .arg(root.join("tests/support/dynalite.js"))
            .current_dir(root);
        let mut process = ChildProcess::spawn("dynalite", command, true)?;

        let started = Instant::now();
        let port = loop {
            let output = process.stdout();
            if let Some(line) = output
                .lines()
                .find(|line| line.starts_with("listening on "))
            {
                let port: u16 = line["listening on ".len()..]
                    .trim()
                    .parse()
                    .map_err(|_| format!("dynalite printed an invalid port: {line:?}"))?;
                break port;
            }
            if let Some(status) = process.try_exit_status() {
                return Err(format!(
                    "dynalite exited with {status} before it listened\n{}",
                    process.output_tail()
                )
                .into());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "dynalite did not print its port within {} s\n{}",
                    START_TIMEOUT.as_secs(),
                    process.output_tail()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };

        Ok(Self {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            _process: process,
        })
    }

    /// Returns the HTTP endpoint for a DynamoDB client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }
}

/// Returns the installed dynalite version from its package.json.
pub fn installed_version(root: &Path) -> BenchResult<String> {
    let path = root.join("node_modules/dynalite/package.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("failed to read {}: {error}", path.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| format!("invalid JSON in {}: {error}", path.display()))?;
    manifest["version"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{} has no version", path.display()).into())
}
