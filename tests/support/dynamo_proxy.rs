//! An HTTP proxy on 127.0.0.1 between a DynamoDB client and dynalite. It
//! counts the requests that reach the wire per operation, can hold the
//! requests of an operation forever, like a DynamoDB that stopped responding,
//! and can inject faults chosen by a seeded random generator.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A fault that the proxy puts in place of a normal exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// 400 ProvisionedThroughputExceededException, without forwarding.
    ProvisionedThroughputExceeded,
    /// 400 ThrottlingException, without forwarding.
    Throttling,
    /// 500 InternalServerError, without forwarding.
    InternalServerError,
    /// 503 with no DynamoDB error type, without forwarding.
    ServiceUnavailable,
    /// The connection is reset (a TCP RST) before the request reaches dynalite.
    ResetBeforeForwarding,
    /// dynalite carries out the request, then the connection is reset before
    /// the response reaches the client.
    ResetAfterForwarding,
    /// dynalite carries out the request, and its response waits for the
    /// proxy's slow-response delay, which tests set beyond the SDK's attempt
    /// timeout.
    SlowResponse,
    /// A random non-empty subset of a BatchWriteItem's write requests comes
    /// back in UnprocessedItems without reaching dynalite, as when DynamoDB
    /// throttles part of a batch. Only BatchWriteItem requests get it.
    Unprocessed,
    /// The request reaches dynalite with its table renamed to one that does
    /// not exist, so dynalite returns ResourceNotFoundException, as when the
    /// table is deleted during the deletion.
    MissingTable,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::ProvisionedThroughputExceeded,
        Fault::Throttling,
        Fault::InternalServerError,
        Fault::ServiceUnavailable,
        Fault::ResetBeforeForwarding,
        Fault::ResetAfterForwarding,
        Fault::SlowResponse,
        Fault::Unprocessed,
        Fault::MissingTable,
    ];

    /// Returns whether this fault can replace a request of `operation`.
    fn applies_to(self, operation: &str) -> bool {
        self != Fault::Unprocessed || operation == "BatchWriteItem"
    }

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
            Fault::ResetBeforeForwarding
            | Fault::ResetAfterForwarding
            | Fault::SlowResponse
            | Fault::Unprocessed
            | Fault::MissingTable => None,
        }
    }
}

/// Which faults to inject, how often, and the generator that picks them.
struct FaultPlan {
    random: fastrand::Rng,
    fraction: f64,
    faults: Vec<Fault>,
}

/// The delay of a [`Fault::SlowResponse`] until a test sets another.
const DEFAULT_SLOW_RESPONSE: Duration = Duration::from_secs(3);

/// The table name that [`Fault::MissingTable`] puts in a request.
const MISSING_TABLE: &str = "table_removed_by_the_test_proxy";

#[derive(Default)]
struct State {
    counts: Mutex<HashMap<String, u32>>,
    /// Requests still to hold, per operation, before the proxy forwards again.
    held_next: Mutex<HashMap<String, u32>>,
    plan: Mutex<Option<FaultPlan>>,
    injected: Mutex<BTreeMap<Fault, u32>>,
    /// The delay of a slow response, when a test set one.
    slow_response: Mutex<Option<Duration>>,
    /// Write requests that [`Fault::Unprocessed`] returned unprocessed.
    unprocessed_writes: AtomicU32,
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
        self.state.injected.lock().unwrap().values().sum()
    }

    /// Returns how many faults of each kind the proxy injected.
    pub fn injected_by_fault(&self) -> BTreeMap<Fault, u32> {
        self.state.injected.lock().unwrap().clone()
    }

    /// Returns how many write requests [`Fault::Unprocessed`] sent back unprocessed.
    pub fn unprocessed_writes(&self) -> u32 {
        self.state.unprocessed_writes.load(Ordering::Relaxed)
    }

    /// Sets how long a [`Fault::SlowResponse`] delays a response (3 s unless set).
    pub fn set_slow_response(&self, delay: Duration) {
        *self.state.slow_response.lock().unwrap() = Some(delay);
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

    while let Some((mut head, mut body, operation)) = read_request(&mut requests).await {
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

        let picked = pick_fault(state, &operation);
        let fault = picked.map(|(fault, _)| fault);
        if let Some((status, error_body)) = fault.and_then(Fault::error_response) {
            let response = build_response(status, &[], error_body.as_bytes());
            if client_writer.write_all(&response).await.is_err() {
                return;
            }
            continue;
        }

        let mut unprocessed = Map::new();
        match picked {
            Some((Fault::ResetBeforeForwarding, _)) => return reset(requests, client_writer),
            Some((Fault::MissingTable, _)) => body = with_missing_table(&body),
            Some((Fault::Unprocessed, seed)) => {
                let Some(split) = split_batch(&body, seed) else {
                    return;
                };
                state
                    .unprocessed_writes
                    .fetch_add(split.unprocessed_count, Ordering::Relaxed);
                unprocessed = split.unprocessed;
                match split.forwarded_body {
                    Some(forwarded) => body = forwarded,
                    None => {
                        // Nothing is left to forward, so the proxy responds by itself.
                        let answer = json!({"UnprocessedItems": unprocessed}).to_string();
                        let response = build_response("200 OK", &[], answer.as_bytes());
                        if client_writer.write_all(&response).await.is_err() {
                            return;
                        }
                        continue;
                    }
                }
            }
            _ => {}
        }
        head = with_content_length(&head, body.len());

        if server_writer.write_all(&head).await.is_err()
            || server_writer.write_all(&body).await.is_err()
        {
            return;
        }
        let Some(mut response) = read_response(&mut responses).await else {
            return;
        };
        match fault {
            Some(Fault::ResetAfterForwarding) => return reset(requests, client_writer),
            Some(Fault::SlowResponse) => {
                let delay = state
                    .slow_response
                    .lock()
                    .unwrap()
                    .unwrap_or(DEFAULT_SLOW_RESPONSE);
                tokio::time::sleep(delay).await;
            }
            Some(Fault::Unprocessed) => response = with_unprocessed(&response, unprocessed),
            _ => {}
        }
        if client_writer.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// Resets the client's connection: with a zero linger time, closing the
/// socket sends a TCP RST instead of a normal close. The write half is
/// forgotten first, because dropping it would send a FIN before the reset.
fn reset(requests: BufReader<OwnedReadHalf>, writer: OwnedWriteHalf) {
    let reader = requests.into_inner();
    let _ = reader.as_ref().set_zero_linger();
    writer.forget();
    drop(reader);
}

/// Picks the fault for the next request of `operation` from the plan, if
/// any, with a seed for the fault's own random choices.
fn pick_fault(state: &State, operation: &str) -> Option<(Fault, u64)> {
    let mut plan = state.plan.lock().unwrap();
    let plan = plan.as_mut()?;
    let applicable: Vec<Fault> = plan
        .faults
        .iter()
        .copied()
        .filter(|fault| fault.applies_to(operation))
        .collect();
    if applicable.is_empty() || plan.random.f64() >= plan.fraction {
        return None;
    }

    let fault = applicable[plan.random.usize(..applicable.len())];
    *state.injected.lock().unwrap().entry(fault).or_default() += 1;
    Some((fault, plan.random.u64(..)))
}

/// A BatchWriteItem split by [`Fault::Unprocessed`].
struct SplitBatch {
    /// The request body with the write requests that go on to dynalite, or
    /// None when every write request stays back.
    forwarded_body: Option<Vec<u8>>,
    /// The write requests that come back unprocessed, per table.
    unprocessed: Map<String, Value>,
    unprocessed_count: u32,
}

/// Moves a random non-empty subset of a BatchWriteItem's write requests out
/// of the request. Returns None for a body that is not a BatchWriteItem.
fn split_batch(body: &[u8], seed: u64) -> Option<SplitBatch> {
    let mut random = fastrand::Rng::with_seed(seed);
    let mut request: Value = serde_json::from_slice(body).ok()?;
    let items = request.get_mut("RequestItems")?.as_object_mut()?;
    let total: usize = items
        .values()
        .filter_map(Value::as_array)
        .map(Vec::len)
        .sum();
    if total == 0 {
        return None;
    }
    // At least one write request stays back, and any number up to all of them.
    let kept_back = random.usize(1..=total);
    let mut positions: Vec<usize> = (0..total).collect();
    random.shuffle(&mut positions);
    positions.truncate(kept_back);

    let mut unprocessed = Map::new();
    let mut position = 0;
    for (table, writes) in items.iter_mut() {
        let Some(writes) = writes.as_array_mut() else {
            continue;
        };
        let mut forwarded = Vec::new();
        for write in writes.drain(..) {
            if positions.contains(&position) {
                let entry = unprocessed
                    .entry(table.clone())
                    .or_insert_with(|| json!([]));
                entry.as_array_mut()?.push(write);
            } else {
                forwarded.push(write);
            }
            position += 1;
        }
        *writes = forwarded;
    }
    items.retain(|_, writes| writes.as_array().is_some_and(|writes| !writes.is_empty()));

    let forwarded_body = (!items.is_empty()).then(|| request.to_string().into_bytes());
    Some(SplitBatch {
        forwarded_body,
        unprocessed,
        unprocessed_count: kept_back as u32,
    })
}

/// Returns the request body with every table name replaced by one that
/// dynalite does not have. Leaves a body that is not JSON as it is.
fn with_missing_table(body: &[u8]) -> Vec<u8> {
    let Ok(mut request) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    if let Some(table) = request.get_mut("TableName") {
        *table = json!(MISSING_TABLE);
    }
    if let Some(items) = request
        .get_mut("RequestItems")
        .and_then(Value::as_object_mut)
    {
        let writes: Vec<Value> = std::mem::take(items)
            .into_values()
            .filter_map(|writes| writes.as_array().cloned())
            .flatten()
            .collect();
        items.insert(MISSING_TABLE.to_owned(), Value::Array(writes));
    }
    request.to_string().into_bytes()
}

/// Adds write requests that the proxy kept back to the UnprocessedItems of
/// a successful BatchWriteItem response. Leaves an error response as it is,
/// because the client then resends the whole batch anyway.
fn with_unprocessed(response: &[u8], kept_back: Map<String, Value>) -> Vec<u8> {
    let Some((head, body)) = split_message(response) else {
        return response.to_vec();
    };
    let status_line = head.lines().next().unwrap_or_default();
    let Ok(mut output) = serde_json::from_slice::<Value>(body) else {
        return response.to_vec();
    };
    if !status_line.contains(" 200 ") {
        return response.to_vec();
    }

    let unprocessed = output.as_object_mut().map(|output| {
        output
            .entry("UnprocessedItems")
            .or_insert_with(|| json!({}))
    });
    let Some(Value::Object(unprocessed)) = unprocessed else {
        return response.to_vec();
    };
    for (table, writes) in kept_back {
        let entry = unprocessed.entry(table).or_insert_with(|| json!([]));
        if let (Some(entry), Value::Array(writes)) = (entry.as_array_mut(), writes) {
            entry.extend(writes);
        }
    }

    // The body changed, so dynalite's length and CRC32 headers no longer fit it.
    let headers: Vec<&str> = head
        .lines()
        .skip(1)
        .filter(|line| {
            let name = line.split(':').next().unwrap_or_default();
            !name.eq_ignore_ascii_case("content-length")
                && !name.eq_ignore_ascii_case("x-amz-crc32")
        })
        .collect();
    let status = status_line
        .split_once(' ')
        .map_or("200 OK", |(_, status)| status);
    build_response(status, &headers, output.to_string().as_bytes())
}

/// Splits an HTTP message into its head, without the blank line, and its body.
fn split_message(message: &[u8]) -> Option<(&str, &[u8])> {
    let end = message
        .windows(4)
        .position(|window| window == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&message[..end]).ok()?;
    Some((head, &message[end + 4..]))
}

/// Returns a request head with its Content-Length set to `length`.
fn with_content_length(head: &[u8], length: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut rebuilt = String::new();
    for line in text.split_inclusive("\r\n") {
        let name = line.split(':').next().unwrap_or_default();
        if name.eq_ignore_ascii_case("content-length") {
            rebuilt.push_str(&format!("content-length: {length}\r\n"));
        } else {
            rebuilt.push_str(line);
        }
    }
    rebuilt.into_bytes()
}

/// Builds an HTTP/1.1 response with a JSON body, as DynamoDB sends them.
fn build_response(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut response = format!("HTTP/1.1 {status}\r\n");
    if headers.is_empty() {
        response
            .push_str("content-type: application/x-amz-json-1.0\r\nx-amzn-requestid: injected\r\n");
    }
    for header in headers {
        response.push_str(header);
        response.push_str("\r\n");
    }
    response.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut response = response.into_bytes();
    response.extend_from_slice(body);
    response
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
