//! A JWKS endpoint on 127.0.0.1 that counts its fetches and can change the
//! document it serves, to test caching and key rotation.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

pub struct JwksServer {
    pub url: String,
    fetches: Arc<AtomicUsize>,
    response: Arc<Mutex<(u16, String)>>,
}

impl JwksServer {
    /// Starts serving `jwks` with status 200.
    pub fn start(jwks: &Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the JWKS server to 127.0.0.1");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let fetches = Arc::new(AtomicUsize::new(0));
        let response = Arc::new(Mutex::new((200, jwks.to_string())));

        let (counter, served) = (fetches.clone(), response.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                // Read the request head up to its blank line; a GET has no body.
                while reader.read_line(&mut line).is_ok_and(|read| read > 0) && line != "\r\n" {
                    line.clear();
                }
                counter.fetch_add(1, Ordering::SeqCst);

                let (status, body) = served.lock().unwrap().clone();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = (&stream).write_all(reply.as_bytes());
            }
        });

        Self {
            url,
            fetches,
            response,
        }
    }

    /// Returns how many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Changes what the server sends from now on.
    pub fn serve(&self, status: u16, body: &str) {
        *self.response.lock().unwrap() = (status, body.to_owned());
    }
}
