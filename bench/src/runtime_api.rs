//! A Lambda Runtime API on 127.0.0.1 that serves one function process: it
//! hands out queued events and records when the process first requested
//! one, when it got it, and what and when it posted back.
//!
//! It serves both the Rust `lambda_runtime` crate and the Python runtime
//! interface client (awslambdaric, whose native client is libcurl-based), so it
//! understands keep-alive, `Expect: 100-continue` and chunked request bodies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::BenchResult;

/// How far in the future the deadline of each invocation lies. The bench
/// needs no deadline, so it is far beyond the longest run.
const INVOCATION_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// Largest request body accepted: Lambda's limit for a synchronous response.
const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:delete-learning-user";

/// The requests of one function process and the times they arrived.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The first `GET /runtime/invocation/next`: the end of the process's init.
    pub first_next_at: Option<Instant>,
    /// When the server wrote the event to the process.
    pub handed_out_at: Option<Instant>,
    pub outcome: Option<Outcome>,
}

/// The end of the invocation or of the init: a response or an error.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A posted response, with the time its body had been read.
    Response { at: Instant, body: Value },
    /// A posted invocation error.
    Error(String),
    /// A posted init error.
    InitError(String),
}

/// A running Runtime API. Dropping it stops the server and its connections.
pub struct RuntimeApi {
    pub address: SocketAddr,
    events: mpsc::UnboundedSender<(String, Value)>,
    timeline: watch::Receiver<Timeline>,
    accept_task: JoinHandle<()>,
}

struct Shared {
    pending: Mutex<mpsc::UnboundedReceiver<(String, Value)>>,
    timeline: watch::Sender<Timeline>,
}

impl RuntimeApi {
    /// Starts the server on 127.0.0.1 with a free port.
    pub async fn start() -> BenchResult<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|error| format!("failed to bind the Runtime API to 127.0.0.1: {error}"))?;
        let address = listener
            .local_addr()
            .map_err(|error| format!("failed to read the Runtime API's address: {error}"))?;
        let (events, pending) = mpsc::unbounded_channel();
        let (timeline_sender, timeline) = watch::channel(Timeline::default());
        let shared = Arc::new(Shared {
            pending: Mutex::new(pending),
            timeline: timeline_sender,
        });

        let accept_task = tokio::spawn(async move {
            // Aborting the accept task drops this set, which aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            connections.spawn(serve_connection(stream, shared.clone()));
                        }
                        Err(error) => eprintln!("Runtime API: accept failed: {error}"),
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });

        Ok(Self {
            address,
            events,
            timeline,
            accept_task,
        })
    }

    /// Queues an event for the next `GET /runtime/invocation/next`.
    pub fn push_event(&self, request_id: &str, event: Value) {
        // The receiver lives as long as the server, which lives as long as self.
        let _ = self.events.send((request_id.to_owned(), event));
    }

    /// Waits for the first `GET /runtime/invocation/next`, for at most `timeout`.
    pub async fn wait_for_first_next(&self, timeout: Duration) -> BenchResult<Instant> {
        let timeline = self
            .wait_for(timeout, |timeline| {
                timeline.first_next_at.is_some()
                    || matches!(timeline.outcome, Some(Outcome::InitError(_)))
            })
            .await
            .map_err(|_| {
                format!(
                    "the function did not request an event within {} s",
                    timeout.as_secs()
                )
            })?;
        match (timeline.first_next_at, timeline.outcome) {
            (Some(at), _) => Ok(at),
            (None, Some(Outcome::InitError(error))) => {
                Err(format!("the function posted an init error: {error}").into())
            }
            (None, _) => Err("the function stopped before it requested an event".into()),
        }
    }

    /// Waits for a posted response, invocation error or init error, for at most `timeout`.
    pub async fn wait_for_outcome(&self, timeout: Duration) -> BenchResult<Timeline> {
        self.wait_for(timeout, |timeline| timeline.outcome.is_some())
            .await
            .map_err(|_| {
                format!(
                    "the function posted no response within {} s",
                    timeout.as_secs()
                )
                .into()
            })
    }

    async fn wait_for(
        &self,
        timeout: Duration,
        ready: impl FnMut(&Timeline) -> bool,
    ) -> Result<Timeline, ()> {
        let mut receiver = self.timeline.clone();
        match tokio::time::timeout(timeout, receiver.wait_for(ready)).await {
            Ok(Ok(timeline)) => Ok(timeline.clone()),
            _ => Err(()),
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// One request as far as the server needs it.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// One response: status line, extra headers and body.
struct Response {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Response {
    fn accepted() -> Self {
        Self {
            status: "202 Accepted",
            headers: Vec::new(),
            body: r#"{"status":"OK"}"#.to_owned(),
        }
    }

    fn not_found() -> Self {
        Self {
            status: "404 Not Found",
            headers: Vec::new(),
            body: r#"{"errorMessage":"unknown path"}"#.to_owned(),
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (read, mut writer) = stream.into_split();
    let mut reader = BufReader::new(read);

    // Both runtime clients keep the connection open across requests.
    loop {
        let request = match read_request(&mut reader, &mut writer, &shared).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            // The bench kills each function process while its next long poll is open.
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return;
            }
            Err(error) => {
                eprintln!("Runtime API: invalid request: {error}");
                return;
            }
        };
        let Some(response) = route(&shared, request).await else {
            return;
        };

        let mut head = format!(
            "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            response.status,
            response.body.len()
        );
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).await.is_err()
            || writer.write_all(response.body.as_bytes()).await.is_err()
        {
            return;
        }
    }
}

/// Builds the response to one request, or returns None when the server is shutting down.
async fn route(shared: &Shared, request: Request) -> Option<Response> {
    let segments: Vec<&str> = request
        .path
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_start_matches('/')
        .split('/')
        .collect();

    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["2018-06-01", "runtime", "invocation", "next"]) => {
            // Long poll, as Lambda does, until the bench queues an event.
            let (request_id, event) = shared.pending.lock().await.recv().await?;
            let deadline_ms = SystemTime::now()
                .checked_add(INVOCATION_DEADLINE)
                .and_then(|deadline| deadline.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |since_epoch| since_epoch.as_millis());
            shared.timeline.send_modify(|timeline| {
                timeline.handed_out_at = Some(Instant::now());
            });
            Some(Response {
                status: "200 OK",
                headers: vec![
                    ("lambda-runtime-aws-request-id", request_id),
                    ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
                    (
                        "lambda-runtime-invoked-function-arn",
                        FUNCTION_ARN.to_owned(),
                    ),
                    (
                        "lambda-runtime-trace-id",
                        "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned(),
                    ),
                ],
                body: event.to_string(),
            })
        }
        ("POST", ["2018-06-01", "runtime", "invocation", _, "response"]) => {
            let at = Instant::now();
            let text = String::from_utf8_lossy(&request.body).into_owned();
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            shared.timeline.send_modify(|timeline| {
                timeline.outcome = Some(Outcome::Response { at, body });
            });
            Some(Response::accepted())
        }
        ("POST", ["2018-06-01", "runtime", "invocation", _, "error"]) => {
            let text = String::from_utf8_lossy(&request.body).into_owned();
            shared.timeline.send_modify(|timeline| {
                timeline.outcome = Some(Outcome::Error(text));
            });
            Some(Response::accepted())
        }
        ("POST", ["2018-06-01", "runtime", "init", "error"]) => {
            let text = String::from_utf8_lossy(&request.body).into_owned();
            shared.timeline.send_modify(|timeline| {
                timeline.outcome = Some(Outcome::InitError(text));
            });
            Some(Response::accepted())
        }
        _ => Some(Response::not_found()),
    }
}

/// Reads one HTTP/1.1 request, or returns None when the client closed the connection.
async fn read_request(
    reader: &mut BufReader<OwnedReadHalf>,
    writer: &mut OwnedWriteHalf,
    shared: &Shared,
) -> std::io::Result<Option<Request>> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await? == 0 {
        return Ok(None);
    }
    let mut words = request_line.split_whitespace();
    let (Some(method), Some(path)) = (words.next(), words.next()) else {
        return Err(invalid_data(format!(
            "invalid request line {request_line:?}"
        )));
    };
    let method = method.to_owned();
    let path = path.to_owned();

    if method == "GET" && path.starts_with("/2018-06-01/runtime/invocation/next") {
        // Init ends with this request, so its time is taken before anything else is read.
        let now = Instant::now();
        shared.timeline.send_if_modified(|timeline| {
            let first = timeline.first_next_at.is_none();
            if first {
                timeline.first_next_at = Some(now);
            }
            first
        });
    }

    let mut content_length = 0;
    let mut chunked = false;
    let mut expects_continue = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid_data(format!("invalid header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value
                .parse()
                .map_err(|_| invalid_data(format!("invalid Content-Length {value:?}")))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }

    if expects_continue {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let body = if chunked {
        read_chunked_body(reader).await?
    } else {
        if content_length > MAX_BODY_BYTES {
            return Err(invalid_data(format!(
                "body of {content_length} bytes is above the limit of {MAX_BODY_BYTES}"
            )));
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).await?;
        body
    };
    Ok(Some(Request { method, path, body }))
}

async fn read_chunked_body(reader: &mut BufReader<OwnedReadHalf>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).await?;
        let size_text = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid_data(format!("invalid chunk size {size_line:?}")))?;
        if body.len() + size > MAX_BODY_BYTES {
            return Err(invalid_data(format!(
                "chunked body above the limit of {MAX_BODY_BYTES} bytes"
            )));
        }

        if size == 0 {
            // Trailer fields, if any, end with an empty line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }

        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        let mut line_end = [0; 2];
        reader.read_exact(&mut line_end).await?;
    }
}

fn invalid_data(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exchange(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address)
            .await
            .expect("connect to the Runtime API");
        stream.write_all(request).await.expect("send the request");
        let mut reply = vec![0; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
            .await
            .expect("reply within 5 s")
            .expect("read the reply");
        String::from_utf8_lossy(&reply[..read]).into_owned()
    }

    #[tokio::test]
    async fn runtime_api_hands_out_event_and_records_response() {
        let api = RuntimeApi::start().await.expect("start the Runtime API");
        api.push_event("request-1", serde_json::json!({"hello": "world"}));

        let next = exchange(
            api.address,
            b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await;
        assert!(next.starts_with("HTTP/1.1 200 OK"), "{next}");
        assert!(
            next.contains("lambda-runtime-aws-request-id: request-1"),
            "{next}"
        );
        assert!(next.ends_with(r#"{"hello":"world"}"#), "{next}");

        let posted = exchange(
            api.address,
            b"POST /2018-06-01/runtime/invocation/request-1/response HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"sta\r\nD\r\ntusCode\":204}\r\n0\r\n\r\n",
        )
        .await;
        assert!(posted.starts_with("HTTP/1.1 100 Continue"), "{posted}");

        let timeline = api
            .wait_for_outcome(Duration::from_secs(5))
            .await
            .expect("outcome recorded");
        assert!(timeline.first_next_at.is_some());
        assert!(timeline.handed_out_at.is_some());
        match timeline.outcome {
            Some(Outcome::Response { body, .. }) => assert_eq!(body["statusCode"], 204),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn runtime_api_rejects_unknown_path() {
        let api = RuntimeApi::start().await.expect("start the Runtime API");
        let reply = exchange(api.address, b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    }

    #[tokio::test]
    async fn runtime_api_reports_init_error() {
        let api = RuntimeApi::start().await.expect("start the Runtime API");
        exchange(
            api.address,
            b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\ncontent-length: 6\r\n\r\nbroken",
        )
        .await;
        let error = api
            .wait_for_first_next(Duration::from_secs(5))
            .await
            .expect_err("an init error ends the wait");
        assert!(error.to_string().contains("broken"), "{error}");
    }
}
