//! An HTTP proxy on 127.0.0.1 between a DynamoDB client and dynalite. It
//! counts the requests that reach the wire per operation, and can hold the
//! requests of an operation forever, like a DynamoDB that stopped responding.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct State {
    counts: Mutex<HashMap<String, u32>>,
    held: Mutex<HashSet<String>>,
    /// Requests still to hold, per operation, before the proxy forwards again.
    held_next: Mutex<HashMap<String, u32>>,
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
    /// forwarding or answering them, and forward the ones after.
    pub fn hold_next(&self, operation: &str, count: u32) {
        self.state
            .held_next
            .lock()
            .unwrap()
            .insert(operation.to_owned(), count);
    }

    /// Makes the proxy hold every later request of `operation` without
    /// forwarding or answering it.
    pub fn hold(&self, operation: &str) {
        self.state.held.lock().unwrap().insert(operation.to_owned());
    }
}

/// Relays one client connection: requests one by one to dynalite, responses
/// back as they come.
async fn relay(client: TcpStream, upstream: &str, state: &State) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_reader, mut client_writer) = client.into_split();
    let (mut server_reader, mut server_writer) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_reader, &mut client_writer).await;
    });

    let mut requests = BufReader::new(client_reader);
    while let Some((head, body, operation)) = read_request(&mut requests).await {
        *state
            .counts
            .lock()
            .unwrap()
            .entry(operation.clone())
            .or_default() += 1;

        if state.held.lock().unwrap().contains(&operation) || take_held_next(state, &operation) {
            // The client sees a request that never gets an answer.
            std::future::pending::<()>().await;
        }

        if server_writer.write_all(&head).await.is_err()
            || server_writer.write_all(&body).await.is_err()
        {
            return;
        }
    }
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
async fn read_request(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> Option<(Vec<u8>, Vec<u8>, String)> {
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
