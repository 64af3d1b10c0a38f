//! A minimal Lambda Runtime API on 127.0.0.1, enough to run the real
//! `bootstrap` binary outside Lambda: it hands out queued events and records
//! what the function posts back.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What the function posted for one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Response(Value),
    Error(String),
}

#[derive(Default)]
struct State {
    /// Queued events with their request id and deadline in milliseconds since the epoch.
    pending: VecDeque<(String, Value, Option<u128>)>,
    outcomes: Vec<(String, Outcome)>,
    /// GET /next requests so far; the first one means that init has finished.
    polls: usize,
    init_error: Option<String>,
}

/// The X-Ray trace header of every invocation: a sampled trace whose
/// function segment is `Parent`.
pub const TRACE_HEADER: &str =
    "Root=1-6751e2a0-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1";

/// The server; it stops accepting when the test process exits.
pub struct RuntimeApi {
    pub address: String,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl RuntimeApi {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Runtime API to 127.0.0.1");
        let address = listener.local_addr().unwrap().to_string();
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));

        let accepting = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = accepting.clone();
                std::thread::spawn(move || serve_connection(stream, &state));
            }
        });

        Self { address, state }
    }

    /// Queues an event under a request id, with an invocation deadline 30 s after it is handed out.
    pub fn push_event(&self, request_id: &str, event: Value) {
        self.push_event_with_deadline(request_id, event, None);
    }

    /// Queues an event whose invocation ends at `deadline_ms`, in milliseconds
    /// since the Unix epoch, or 30 s after it is handed out when None.
    pub fn push_event_with_deadline(
        &self,
        request_id: &str,
        event: Value,
        deadline_ms: Option<u128>,
    ) {
        let (lock, changed) = &*self.state;
        lock.lock()
            .unwrap()
            .pending
            .push_back((request_id.to_owned(), event, deadline_ms));
        changed.notify_all();
    }

    /// Waits until `count` outcomes or an init error arrived, for at most `timeout`.
    pub fn wait_for_outcomes(&self, count: usize, timeout: Duration) -> Vec<(String, Outcome)> {
        let (lock, changed) = &*self.state;
        let deadline = Instant::now() + timeout;
        let mut state = lock.lock().unwrap();
        while state.outcomes.len() < count && state.init_error.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {count} outcomes; got {:?}",
                state.outcomes
            );
            state = changed.wait_timeout(state, left).unwrap().0;
        }
        state.outcomes.clone()
    }

    /// Waits until the function requests its first event, which it does once
    /// its init has finished, for at most `timeout`.
    pub fn wait_for_first_poll(&self, timeout: Duration) {
        let (lock, changed) = &*self.state;
        let deadline = Instant::now() + timeout;
        let mut state = lock.lock().unwrap();
        while state.polls == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the function never asked for an event");
            state = changed.wait_timeout(state, left).unwrap().0;
        }
    }

    pub fn init_error(&self) -> Option<String> {
        self.state.0.lock().unwrap().init_error.clone()
    }
}

fn serve_connection(stream: TcpStream, state: &(Mutex<State>, Condvar)) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);

    // The runtime client keeps the connection alive across requests.
    while let Some((method, path, body)) = read_request(&mut reader) {
        let (status, headers, response_body) = route(state, &method, &path, body);
        let mut response = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n",
            response_body.len()
        );
        for (name, value) in headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&response_body);
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn route(
    state: &(Mutex<State>, Condvar),
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (&'static str, Vec<(&'static str, String)>, String) {
    let (lock, changed) = state;
    let text = String::from_utf8_lossy(&body).into_owned();

    if method == "GET" && path == "/2018-06-01/runtime/invocation/next" {
        // Long poll, as Lambda does, until an event is queued.
        let mut guard = lock.lock().unwrap();
        guard.polls += 1;
        changed.notify_all();
        loop {
            if let Some((request_id, event, deadline_ms)) = guard.pending.pop_front() {
                let deadline_ms = deadline_ms.unwrap_or_else(|| epoch_millis() + 30_000);
                let headers = vec![
                    ("content-type", "application/json".to_owned()),
                    ("lambda-runtime-aws-request-id", request_id),
                    ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
                    (
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:delete-learning-user"
                            .to_owned(),
                    ),
                    ("lambda-runtime-trace-id", TRACE_HEADER.to_owned()),
                ];
                return ("200 OK", headers, event.to_string());
            }
            guard = changed.wait(guard).unwrap();
        }
    }

    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut guard = lock.lock().unwrap();
    match (method, parts.as_slice()) {
        (
            "POST",
            [
                "2018-06-01",
                "runtime",
                "invocation",
                request_id,
                "response",
            ],
        ) => {
            let response = serde_json::from_str(&text).unwrap_or(Value::String(text));
            guard
                .outcomes
                .push(((*request_id).to_owned(), Outcome::Response(response)));
        }
        ("POST", ["2018-06-01", "runtime", "invocation", request_id, "error"]) => {
            guard
                .outcomes
                .push(((*request_id).to_owned(), Outcome::Error(text)));
        }
        ("POST", ["2018-06-01", "runtime", "init", "error"]) => guard.init_error = Some(text),
        _ => return ("404 Not Found", Vec::new(), String::new()),
    }
    changed.notify_all();
    ("202 Accepted", Vec::new(), "{}".to_owned())
}

/// Reads one HTTP/1.1 request with a Content-Length body, or None when the
/// connection closes.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, String, Vec<u8>)> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    let mut words = request_line.split_whitespace();
    let method = words.next()?.to_owned();
    let path = words.next()?.to_owned();

    let mut content_length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().ok()?;
        }
    }

    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).ok()?;
    Some((method, path, body))
}

/// Returns the current time in milliseconds since the Unix epoch, as Lambda's deadlines count.
pub fn epoch_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}
