//! Child processes that the bench starts: each one is killed when its handle
//! drops, also on error paths, and every wait on one has a timeout.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use crate::BenchResult;

/// How long a killed process gets to exit before the bench gives up on it.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running child process with its stdout and stderr captured in memory.
pub struct ChildProcess {
    name: String,
    child: Child,
    /// Kept open so that a child that exits when its stdin closes (dynalite) keeps running.
    _stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl ChildProcess {
    /// Starts `command` with piped output. `name` appears in every error about it.
    ///
    /// The environment stays as the caller set it. The runners clear it for
    /// every function process and Python script.
    pub fn spawn(name: &str, mut command: Command, keep_stdin: bool) -> BenchResult<Self> {
        command
            .stdin(if keep_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|error| format!("failed to start {name}: {error}"))?;

        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(pipe) = child.stdout.take() {
            readers.push(tokio::spawn(collect(pipe, stdout.clone())));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(tokio::spawn(collect(pipe, stderr.clone())));
        }

        Ok(Self {
            name: name.to_owned(),
            _stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            readers,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the process id, or None once the process has been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Returns everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stdout)).into_owned()
    }

    /// Returns everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// Returns the last lines of stdout and stderr, for error messages.
    pub fn output_tail(&self) -> String {
        let tail = |text: String| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        format!(
            "stdout:\n{}\nstderr:\n{}",
            tail(self.stdout()),
            tail(self.stderr())
        )
    }

    /// Waits for the process to exit by itself, for at most `timeout`, and
    /// for its output to be read to the end.
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> BenchResult<ExitStatus> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| {
                format!(
                    "{} did not exit within {} s\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.output_tail()
                )
            })?
            .map_err(|error| format!("failed to wait for {}: {error}", self.name))?;
        self.finish_reading().await;
        Ok(status)
    }

    /// Returns the exit status if the process has already exited.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process and waits for it to exit and for its output to be read.
    pub async fn stop(&mut self) -> BenchResult<()> {
        // An error here means that the process already exited, so there is nothing to kill.
        let _ = self.child.start_kill();
        tokio::time::timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .map_err(|_| format!("{} did not exit within 5 s of SIGKILL", self.name))?
            .map_err(|error| format!("failed to wait for {}: {error}", self.name))?;
        self.finish_reading().await;
        Ok(())
    }

    async fn finish_reading(&mut self) {
        // The pipes close when the process exits, unless it left a grandchild
        // holding them, so the readers get a bounded wait.
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(EXIT_TIMEOUT, reader).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // kill_on_drop already sends SIGKILL, and Tokio reaps the process in the
        // background. The readers stop at the pipe's end of file or here.
        for reader in &self.readers {
            reader.abort();
        }
    }
}

async fn collect(mut pipe: impl AsyncRead + Unpin, sink: Arc<Mutex<Vec<u8>>>) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => lock(&sink).extend_from_slice(&buffer[..read]),
        }
    }
}

fn lock(buffer: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    // A reader task that panicked mid-append leaves valid bytes behind, so a poisoned lock is still usable.
    buffer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a short command to the end and returns its trimmed stdout.
pub async fn command_output(program: &str, args: &[&str]) -> BenchResult<String> {
    let mut command = Command::new(program);
    command.args(args);
    let mut child = ChildProcess::spawn(program, command, false)?;
    let status = child.wait_for_exit(Duration::from_secs(30)).await?;
    if !status.success() {
        return Err(format!(
            "`{program} {}` failed with {status}\n{}",
            args.join(" "),
            child.output_tail()
        )
        .into());
    }
    Ok(child.stdout().trim().to_owned())
}

/// Reads a process's peak resident set size (VmHWM) in KiB from /proc.
pub fn peak_rss_kib(pid: u32) -> BenchResult<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|error| format!("failed to read {path}: {error}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{path} has no VmHWM line").into())
}
