//! An HTTP proxy on 127.0.0.1 between a DynamoDB client and dynalite. It
//! counts the requests that reach the wire per operation, can hold the
//! requests of an operation forever, like a DynamoDB that stopped responding,
//! and can inject faults chosen by a seeded random generator.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A fault that the proxy puts in place of a normal exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 400 ProvisionedThroughputExceededException, without forwarding.
    ProvisionedThroughputExceeded,
    /// 400 ThrottlingException, without forwarding.
    Throttling,
    /// 500 InternalServerError, without forwarding.
    InternalServerError,
    /// 503 with no DynamoDB error type, without forwarding.
    ServiceUnavailable,
    /// The connection closes before the request reaches dynalite.
    CloseBeforeForwarding,
    /// dynalite carries out the request, then the connection closes before
    /// the response reaches the client.
    CloseAfterForwarding,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::ProvisionedThroughputExceeded,
        Fault::Throttling,
        Fault::InternalServerError,
        Fault::ServiceUnavailable,
        Fault::CloseBeforeForwarding,
        Fault::CloseAfterForwarding,
    ];

    /// Returns the status line and body of an injected error response, or
    /// None for the faults that close the connection.
    fn error_response(self) -> Option<(&'static str, &'static str)> {
        match self {
            Fault::ProvisionedThroughputExceeded => Some((
                "400 Bad Request",
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"Injected by the test proxy"}"#,
            )),
            Fault::Throttling => Some((
                "400 Bad Request",
                r#"{"__type":"com.amazon.coral.availability#ThrottlingException","message":"Injected by the test proxy"}"#,
            )),
            Fault::InternalServerError => Some((
                "500 Internal Server Error",
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Injected by the test proxy"}"#,
            )),
            Fault::ServiceUnavailable => Some(("503 Service Unavailable", "")),
            Fault::CloseBeforeForwarding | Fault::CloseAfterForwarding => None,
        }
    }
}

/// Which faults to inject, how often, and the generator that picks them.
struct FaultPlan {
    random: fastrand::Rng,
    fraction: f64,
    faults: Vec<Fault>,
}

#[derive(Default)]
struct State {
    counts: Mutex<HashMap<String, u32>>,
    /// Requests still to hold, per operation, before the proxy forwards again.
    held_next: Mutex<HashMap<String, u32>>,
    plan: Mutex<Option<FaultPlan>>,
    injected: AtomicU32,
}

/// The proxy. Its tasks run on the Tokio runtime of the test that started it,
/// and stop with it.
pub struct DynamoProxy {
    pub endpoint: String,
    state: Arc<State>,
}

impl DynamoProxy {
    /// Starts a proxy to `upstream`, an `http://127.0.0.1:PORT` endpoint.
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http:// upstream")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy to 127.0.0.1");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State::default());

        let accepting = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = accepting.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move { relay(client, &upstream, &state).await });
            }
        });

        Self { endpoint, state }
    }

    /// Returns how many requests of `operation` (such as "BatchWriteItem") arrived.
    pub fn count(&self, operation: &str) -> u32 {
        let counts = self.state.counts.lock().unwrap();
        counts.get(operation).copied().unwrap_or(0)
    }

    /// Returns how many requests of any operation arrived.
    pub fn requests(&self) -> u32 {
        self.state.counts.lock().unwrap().values().sum()
    }

    /// Makes the proxy hold the next `count` requests of `operation` without
    /// forwarding them or responding, and forward the ones after.
    pub fn hold_next(&self, operation: &str, count: u32) {
        self.state
            .held_next
            .lock()
            .unwrap()
            .insert(operation.to_owned(), count);
    }

    /// Makes the proxy replace `fraction` of later requests with one of
    /// `faults`, picked by a generator seeded with `seed`, so that a failing
    /// seed replays the same schedule.
    pub fn inject_faults(&self, seed: u64, fraction: f64, faults: &[Fault]) {
        *self.state.plan.lock().unwrap() = Some(FaultPlan {
            random: fastrand::Rng::with_seed(seed),
            fraction,
            faults: faults.to_vec(),
        });
    }

    /// Stops injecting faults.
    pub fn stop_faults(&self) {
        *self.state.plan.lock().unwrap() = None;
    }

    /// Returns how many faults the proxy injected.
    pub fn injected(&self) -> u32 {
        self.state.injected.load(Ordering::Relaxed)
    }

    /// Makes the proxy hold every later request of `operation` without
    /// forwarding it or responding.
    pub fn hold(&self, operation: &str) {
        self.hold_next(operation, u32::MAX);
    }
}

/// Relays one client connection, one exchange at a time: a request to
/// dynalite and its response back, unless a fault takes its place.
async fn relay(client: TcpStream, upstream: &str, state: &State) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_reader, mut client_writer) = client.into_split();
    let (server_reader, mut server_writer) = server.into_split();
    let mut requests = BufReader::new(client_reader);
    let mut responses = BufReader::new(server_reader);

    while let Some((head, body, operation)) = read_request(&mut requests).await {
        *state
            .counts
            .lock()
            .unwrap()
            .entry(operation.clone())
            .or_default() += 1;

        if take_held_next(state, &operation) {
            // The client sees a request that never gets a response.
            std::future::pending::<()>().await;
        }

        let fault = pick_fault(state);
        if let Some((status, error_body)) = fault.and_then(Fault::error_response) {
            if write_error(&mut client_writer, status, error_body)
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        if fault == Some(Fault::CloseBeforeForwarding) {
            return;
        }

        if server_writer.write_all(&head).await.is_err()
            || server_writer.write_all(&body).await.is_err()
        {
            return;
        }
        let Some(response) = read_response(&mut responses).await else {
            return;
        };
        if fault == Some(Fault::CloseAfterForwarding) {
            return;
        }
        if client_writer.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// Picks the fault for the next request from the plan, if any.
fn pick_fault(state: &State) -> Option<Fault> {
    let mut plan = state.plan.lock().unwrap();
    let plan = plan.as_mut()?;
    if plan.faults.is_empty() || plan.random.f64() >= plan.fraction {
        return None;
    }

    let fault = plan.faults[plan.random.usize(..plan.faults.len())];
    state.injected.fetch_add(1, Ordering::Relaxed);
    Some(fault)
}

async fn write_error(client: &mut OwnedWriteHalf, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: injected\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await
}

/// Reads one response of dynalite, which always sends a Content-Length, as raw bytes.
async fn read_response(reader: &mut BufReader<OwnedReadHalf>) -> Option<Vec<u8>> {
    let mut response = Vec::new();
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        response.extend_from_slice(line.as_bytes());
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().ok()?;
        }
    }

    let start = response.len();
    response.resize(start + content_length, 0);
    reader.read_exact(&mut response[start..]).await.ok()?;
    Some(response)
}

/// Returns whether this request of `operation` is one of those to hold next, and counts it.
fn take_held_next(state: &State, operation: &str) -> bool {
    let mut held_next = state.held_next.lock().unwrap();
    match held_next.get_mut(operation) {
        Some(remaining) if *remaining > 0 => {
            *remaining -= 1;
            true
        }
        _ => false,
    }
}

/// Reads one request: its head, its body, and the operation named by its
/// `X-Amz-Target` header (`DynamoDB_20120810.Query` gives `Query`).
async fn read_request(reader: &mut BufReader<OwnedReadHalf>) -> Option<(Vec<u8>, Vec<u8>, String)> {
    let mut head = Vec::new();
    let mut content_length = 0;
    let mut operation = String::new();

    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        head.extend_from_slice(line.as_bytes());
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }

        if let Some((name, value)) = trimmed.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().ok()?;
            } else if name.eq_ignore_ascii_case("x-amz-target") {
                let target = value.trim();
                operation = target.rsplit('.').next().unwrap_or(target).to_owned();
            }
        }
    }

    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).await.ok()?;
    Some((head, body, operation))
}
