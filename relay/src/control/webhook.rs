//! `--webhook URL`: the events of `/v1/events`, each POSTed to the signaling server, signed.
//!
//! The webhook reads the event history with a cursor of its own, exactly like a stream: its
//! queue is the history, bounded at `--event-history` events, so a receiver that is down costs
//! no memory beyond it. Events go out one at a time, in order; a failed delivery (connection
//! error, timeout, non-2xx answer) is retried with exponential backoff from 100 ms to 30 s. If the
//! receiver stays away so long that events leave the history before they are delivered, they are
//! counted (`relay_webhook_dropped_total`) and delivery goes on from the oldest one kept.
//!
//! Each request carries the event's JSON body (as `data` on the stream) and:
//! - `X-Relay-Event-Id`, `X-Relay-Event-Type`;
//! - `X-Relay-Timestamp`: Unix seconds when the request was made;
//! - `X-Relay-Signature: sha256=<hex>`: HMAC-SHA256 with the `--webhook-secret` over
//!   `<timestamp>.<body>`. A receiver recomputes it, compares in constant time, and refuses old
//!   timestamps to stop replays.
//!
//! Plain `http://` only: for TLS, point it at a forwarder on the same host or private network.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::http::{Request, Uri};
use hmac::{Hmac, Mac};
use http_body_util::Full;
use sha2::Sha256;
use tokio::sync::watch;

use super::Shared;
use super::event::{Published, Resume};

/// Where events go and how they are signed.
#[derive(Clone)]
pub struct WebhookConfig {
    /// `http://host:port/path`.
    pub url: Uri,
    /// The HMAC key.
    pub secret: String,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    /// Checks the URL: `http://`, a host and a port (default 80).
    pub fn new(url: &str, secret: &str) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--webhook {url:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            anyhow::bail!(
                "--webhook must be an http:// URL with a host (for TLS, use a local forwarder)"
            );
        }
        if secret.len() < 16 {
            anyhow::bail!("--webhook needs --webhook-secret of at least 16 bytes to sign events");
        }
        Ok(Self {
            url: uri,
            secret: secret.to_owned(),
        })
    }
}

/// Delivery counters, for metrics.
#[derive(Default)]
pub struct WebhookStats {
    /// Events delivered (2xx).
    pub delivered: AtomicU64,
    /// Failed attempts (each retried).
    pub failed: AtomicU64,
    /// Events that left the history before they could be delivered.
    pub dropped: AtomicU64,
}

/// Delivers events until `stop` turns true, from the first event of this run (`relay_started`).
pub(crate) async fn run(
    config: WebhookConfig,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let log = &shared.events;
    let stats = &shared.webhook;
    let mut newest = log.subscribe();
    let mut cursor = match log.resume(Some(0)) {
        Resume::After(c) => c,
        Resume::Gone => *newest.borrow(),
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        let batch = match log.after(cursor, 64) {
            Ok(b) => b,
            Err(missed) => {
                stats.dropped.fetch_add(missed, Ordering::Relaxed);
                cursor += missed;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                changed = newest.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
            }
            continue;
        }
        for event in batch {
            loop {
                match deliver(&config, &event).await {
                    Ok(()) => {
                        stats.delivered.fetch_add(1, Ordering::Relaxed);
                        backoff = BACKOFF_MIN;
                        break;
                    }
                    Err(e) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, event = event.id, retry_in_ms = backoff.as_millis() as u64, "webhook delivery failed");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {},
                            _ = stop.changed() => return,
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            cursor = event.id;
        }
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// One POST; Ok on a 2xx answer.
async fn deliver(config: &WebhookConfig, event: &Published) -> anyhow::Result<()> {
    let attempt = async {
        let host = config.url.host().unwrap_or_default();
        let port = config.url.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let req = Request::post(config.url.path_and_query().map_or("/", |p| p.as_str()))
            .header("host", config.url.authority().map_or(host, |a| a.as_str()))
            .header("content-type", "application/json")
            .header("x-relay-event-id", event.id)
            .header("x-relay-event-type", event.kind)
            .header("x-relay-timestamp", timestamp)
            .header(
                "x-relay-signature",
                format!("sha256={}", sign(&config.secret, timestamp, &event.json)),
            )
            .body(Full::new(axum::body::Bytes::from(event.json.clone())))?;
        let status = sender.send_request(req).await?.status();
        if status.is_success() {
            Ok(())
        } else {
            anyhow::bail!("the receiver answered {status}")
        }
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {ATTEMPT_TIMEOUT:?}"))?
}

/// HMAC-SHA256 over `<timestamp>.<body>`, lowercase hex.
pub fn sign(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        assert!(WebhookConfig::new("http://127.0.0.1:9/hook", "0123456789abcdef").is_ok());
        assert!(WebhookConfig::new("https://x/hook", "0123456789abcdef").is_err());
        assert!(WebhookConfig::new("http://127.0.0.1:9/hook", "short").is_err());
        assert!(WebhookConfig::new("nonsense", "0123456789abcdef").is_err());
    }

    /// RFC 4231 test case 2 ("what do ya want for nothing?" with key "Jefe") through the same
    /// HMAC-SHA256 the signature uses, with the timestamp and dot laid out as the message.
    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            want,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let a = sign("k", 10, "{}");
        let b = sign("k", 11, "{}");
        assert_ne!(a, b, "the timestamp is signed");
        assert_eq!(a.len(), 64);
    }
}
