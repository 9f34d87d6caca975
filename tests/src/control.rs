//! Helpers for tests of the control plane itself: raw HTTP clients that misbehave, timed probes,
//! and a Server-Sent Events reader.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A client that opens a request with a large `Content-Length` and then sends one byte a second:
/// the slow-body attack on a control API.
pub struct Trickler {
    stream: TcpStream,
    started: Instant,
    closed_after: Option<Duration>,
}

impl Trickler {
    /// Connects and sends the request head for `method path` announcing `length` body bytes.
    pub fn start(addr: SocketAddr, method: &str, path: &str, length: usize) -> Self {
        let mut stream = TcpStream::connect(addr).expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).expect("send head");
        stream.set_nonblocking(true).expect("nonblocking");
        Self {
            stream,
            started: Instant::now(),
            closed_after: None,
        }
    }

    /// Sends one more body byte, and notes when the server closed the connection.
    pub fn tick(&mut self) {
        if self.closed_after.is_some() {
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closed_after = Some(self.started.elapsed());
                    return;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.closed_after = Some(self.started.elapsed());
                    return;
                }
            }
        }
        if self.stream.write_all(b" ").is_err() {
            self.closed_after = Some(self.started.elapsed());
        }
    }

    /// How long after the start the server closed the connection, if it has.
    pub fn closed_after(&self) -> Option<Duration> {
        self.closed_after
    }
}

/// A GET on a fresh connection; returns the status and how long the whole exchange took.
pub fn timed_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Duration) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).expect("send");
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    let took = start.elapsed();
    let status = String::from_utf8_lossy(&text)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, took)
}

/// One event read from `/v1/events`.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// `id:`.
    pub id: u64,
    /// `event:`.
    pub kind: String,
    /// `data:`, parsed.
    pub data: Value,
}

/// A reader of `/v1/events`.
pub struct EventStream {
    reader: BufReader<TcpStream>,
    /// The status of the response.
    pub status: u16,
    /// The body, when the status is not 200.
    pub error: Option<Value>,
}

impl EventStream {
    /// Opens `/v1/events` with an optional `?after=` and `Last-Event-ID`.
    pub fn open(
        addr: SocketAddr,
        token: Option<&str>,
        after: Option<u64>,
        last_event_id: Option<u64>,
    ) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut headers = String::new();
        if let Some(t) = token {
            headers += &format!("Authorization: Bearer {t}\r\n");
        }
        if let Some(id) = last_event_id {
            headers += &format!("Last-Event-ID: {id}\r\n");
        }
        let query = after.map(|a| format!("?after={a}")).unwrap_or_default();
        let req = format!(
            "GET /v1/events{query} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{headers}\r\n"
        );
        (&stream).write_all(req.as_bytes()).expect("send");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = None;
        loop {
            line.clear();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
        }
        let error = (status != 200).then(|| {
            let mut body = vec![0u8; length.unwrap_or(0)];
            let _ = reader.read_exact(&mut body);
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        });
        Self {
            reader,
            status,
            error,
        }
    }

    /// The next event (comments and keep-alives skipped), waiting at most `timeout`; `None` at
    /// the end of the stream or on timeout.
    pub fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        let (mut id, mut kind, mut data) = (None, None, String::new());
        let mut line = String::new();
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            line.clear();
            // HTTP/1.0: the body is the stream itself, not chunked.
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if let Some(kind) = kind.take() {
                    return Some(SseEvent {
                        id: id.take().unwrap_or(0),
                        kind,
                        data: serde_json::from_str(&data).unwrap_or(Value::Null),
                    });
                }
                continue;
            }
            if let Some(v) = l.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = l.strip_prefix("event:") {
                kind = Some(v.trim().to_owned());
            } else if let Some(v) = l.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }

    /// Reads events until one of `kind` arrives (returning it) or `timeout` passes.
    pub fn until(&mut self, kind: &str, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let e = self.next(left)?;
            if e.kind == kind {
                return Some(e);
            }
        }
        None
    }
}
