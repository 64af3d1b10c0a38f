//! A TCP proxy in front of dynalite that delays the client-to-server direction
//! and counts DynamoDB requests by operation.
//!
//! The delay is a one-way pipe delay: a chunk read from the client at time t
//! is written to the server at t + latency, in order, and the delays of
//! successive chunks overlap instead of adding up. So each HTTP request
//! arrives about one latency late, the way a request to a remote endpoint
//! would, and requests on parallel connections are delayed independently.
//! Tokio's timer has a resolution of 1 ms, so each delay is rounded up to
//! the next millisecond.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::BenchResult;

/// The proxy's listening socket and counters. Dropping it stops the proxy
/// and closes every connection through it.
pub struct LatencyProxy {
    pub address: SocketAddr,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    accept_task: JoinHandle<()>,
}

/// Requests that passed the proxy since the last reset, by operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationCounts {
    pub query: u64,
    pub batch_write_item: u64,
    /// Requests of any other operation, or without an X-Amz-Target header.
    pub other: u64,
}

impl LatencyProxy {
    /// Starts the proxy on 127.0.0.1 with a free port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr, latency: Duration) -> BenchResult<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|error| format!("failed to bind the proxy to 127.0.0.1: {error}"))?;
        let address = listener
            .local_addr()
            .map_err(|error| format!("failed to read the proxy's address: {error}"))?;
        let counts = Arc::new(Mutex::new(HashMap::new()));

        let accepting_counts = counts.clone();
        let accept_task = tokio::spawn(async move {
            // The connections live in this set, so aborting the accept task
            // drops the set and aborts every relay with it.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => {
                            connections.spawn(relay(client, upstream, latency, accepting_counts.clone()));
                        }
                        Err(error) => eprintln!("proxy: accept failed: {error}"),
                    },
                    // Reap finished relays so that the set does not grow with every connection.
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });

        Ok(Self {
            address,
            counts,
            accept_task,
        })
    }

    /// Returns the HTTP endpoint for a DynamoDB client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Sets every counter back to zero, before a run.
    pub fn reset_counts(&self) {
        lock(&self.counts).clear();
    }

    /// Returns the counts since the last reset.
    pub fn counts(&self) -> OperationCounts {
        let counts = lock(&self.counts);
        let mut result = OperationCounts::default();
        for (operation, count) in counts.iter() {
            match operation.as_str() {
                "Query" => result.query += count,
                "BatchWriteItem" => result.batch_write_item += count,
                _ => result.other += count,
            }
        }
        result
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

fn lock(counts: &Mutex<HashMap<String, u64>>) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
    // The counters stay consistent even if a relay panicked while holding the lock.
    counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Relays one client connection to a new upstream connection.
async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    latency: Duration,
    counts: Arc<Mutex<HashMap<String, u64>>>,
) {
    let server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("proxy: failed to connect to dynalite at {upstream}: {error}");
            return;
        }
    };
    // Without TCP_NODELAY, Nagle's algorithm would add its own delays to small writes.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();

    // The channel carries each chunk with the time at which it is due upstream.
    let (sender, mut receiver) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();

    let reading = async move {
        let mut scanner = TargetScanner::default();
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let due = Instant::now() + latency;
            scanner.feed(&buffer[..read], |operation| {
                *lock(&counts).entry(operation.to_owned()).or_default() += 1;
            });
            if sender.send((due, buffer[..read].to_vec())).is_err() {
                break;
            }
        }
        // Dropping the sender lets the writer drain the chunks still due and then close.
    };

    let writing = async move {
        while let Some((due, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            if server_write.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = server_write.shutdown().await;
    };

    let returning = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };

    tokio::join!(reading, writing, returning);
}

/// The header name, with the line feed that ends the line before it, in lower case.
const TARGET_HEADER: &[u8] = b"\nx-amz-target:";

/// Maximum length of a header value that the scanner waits for across reads. DynamoDB
/// targets are under 64 bytes, so anything longer is not one.
const MAX_TARGET_LENGTH: usize = 256;

/// Finds `X-Amz-Target` headers in a byte stream that arrives in arbitrary
/// chunks, so that a header split across two reads is still counted once.
///
/// NOTE: it scans every byte, bodies included. A request body that contained a
/// raw line feed followed by `x-amz-target:` would be counted too. The Rust SDK
/// and botocore send compact JSON, where a line feed can only appear escaped.
#[derive(Debug, Default)]
struct TargetScanner {
    /// Bytes kept from earlier chunks: a possible start of the header name, or
    /// a header whose value has not ended yet.
    pending: Vec<u8>,
}

impl TargetScanner {
    /// Scans one chunk and calls `record` with the operation of each complete header.
    fn feed(&mut self, chunk: &[u8], mut record: impl FnMut(&str)) {
        self.pending.extend_from_slice(chunk);
        let mut position = 0;

        let keep_from = loop {
            let Some(offset) = find_ignore_ascii_case(&self.pending[position..], TARGET_HEADER)
            else {
                // The last bytes may be the start of a header name that the next chunk completes.
                let partial_name = TARGET_HEADER.len() - 1;
                break self
                    .pending
                    .len()
                    .saturating_sub(partial_name)
                    .max(position);
            };
            let name_start = position + offset;
            let value_start = name_start + TARGET_HEADER.len();

            let Some(value_length) = find_ignore_ascii_case(&self.pending[value_start..], b"\r\n")
            else {
                // The value goes on in the next chunk, unless this is no real header.
                if self.pending.len() - value_start > MAX_TARGET_LENGTH {
                    break self.pending.len();
                }
                break name_start;
            };
            let value =
                String::from_utf8_lossy(&self.pending[value_start..value_start + value_length]);
            record(operation_of(value.trim()));
            // The next header's line feed follows at value_start + value_length + 1.
            position = value_start + value_length;
        };

        self.pending.drain(..keep_from);
    }
}

/// Returns the operation of a target such as `DynamoDB_20120810.Query`.
fn operation_of(target: &str) -> &str {
    target
        .rsplit_once('.')
        .map_or(target, |(_, operation)| operation)
}

fn find_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > haystack.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Vec<String> {
        let mut scanner = TargetScanner::default();
        let mut operations = Vec::new();
        for chunk in chunks {
            scanner.feed(chunk, |operation| operations.push(operation.to_owned()));
        }
        operations
    }

    const QUERY: &[u8] = b"POST / HTTP/1.1\r\nhost: x\r\nx-amz-target: DynamoDB_20120810.Query\r\ncontent-length: 2\r\n\r\n{}";
    const BATCH: &[u8] = b"POST / HTTP/1.1\r\nX-Amz-Target: DynamoDB_20120810.BatchWriteItem\r\nContent-Length: 2\r\n\r\n{}";

    #[test]
    fn scanner_counts_whole_requests() {
        let joined = [QUERY, BATCH, QUERY].concat();
        assert_eq!(scan(&[&joined]), ["Query", "BatchWriteItem", "Query"]);
    }

    #[test]
    fn scanner_counts_header_split_at_every_byte() {
        let joined = [QUERY, BATCH].concat();
        for split in 0..=joined.len() {
            let (first, second) = joined.split_at(split);
            assert_eq!(
                scan(&[first, second]),
                ["Query", "BatchWriteItem"],
                "split at byte {split}"
            );
        }
    }

    #[test]
    fn scanner_counts_one_byte_chunks() {
        let joined = [BATCH, QUERY].concat();
        let chunks: Vec<&[u8]> = joined.chunks(1).collect();
        assert_eq!(scan(&chunks), ["BatchWriteItem", "Query"]);
    }

    #[test]
    fn scanner_ignores_other_headers() {
        let request = b"POST / HTTP/1.1\r\nx-amz-target-other: nothing\r\nx-amz-date: 1\r\n\r\n";
        assert!(scan(&[request]).is_empty());
    }

    #[test]
    fn scanner_drops_overlong_value() {
        let mut request = b"POST / HTTP/1.1\r\nx-amz-target: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', 1000));
        assert!(scan(&[&request]).is_empty());
        // The bytes of the overlong value are not kept, so a later request still counts.
        assert_eq!(scan(&[&request, QUERY]), ["Query"]);
    }

    #[tokio::test]
    async fn proxy_delays_and_counts() {
        let upstream = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test upstream");
        let upstream_address = upstream.local_addr().expect("read the upstream address");
        let echo = tokio::spawn(async move {
            let (mut stream, _) = upstream.accept().await.expect("accept the proxy");
            let mut buffer = vec![0; QUERY.len()];
            stream
                .read_exact(&mut buffer)
                .await
                .expect("read the request");
            stream.write_all(b"done").await.expect("write the reply");
        });

        let proxy = LatencyProxy::start(upstream_address, Duration::from_millis(50))
            .await
            .expect("start the proxy");
        let mut client = TcpStream::connect(proxy.address)
            .await
            .expect("connect to the proxy");
        let started = std::time::Instant::now();
        client.write_all(QUERY).await.expect("send the request");
        let mut reply = [0; 4];
        client.read_exact(&mut reply).await.expect("read the reply");
        let elapsed = started.elapsed();
        echo.await.expect("upstream task");

        assert_eq!(&reply, b"done");
        // Only the lower bound: the delay is a minimum, and an upper bound
        // would depend on how loaded the machine is.
        assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
        assert_eq!(proxy.counts().query, 1);
        proxy.reset_counts();
        assert_eq!(proxy.counts(), OperationCounts::default());
    }
}
