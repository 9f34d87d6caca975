//! The relay's HTTP/JSON control API, as a signaling server uses it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::netns::Netns;

/// A control API client.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    host: Option<std::net::IpAddr>,
    token: Option<String>,
    /// Calls are made from inside this network namespace.
    netns: Option<Arc<Netns>>,
}

/// The relay's reply to a participant PUT.
#[derive(Debug, Clone)]
pub struct Joined {
    /// Where the participant sends its media.
    pub media_address: SocketAddr,
    /// Relay-side ICE credentials, for STUN.
    pub ice: Option<Ice>,
}

/// ICE short-term credentials (RFC 8445 §5.3).
#[derive(Debug, Clone, Deserialize)]
pub struct Ice {
    /// Username fragment.
    pub ufrag: String,
    /// Password.
    pub pwd: String,
}

impl Api {
    /// A client for the API at `control` (`HOST:PORT`), with a bearer token if given.
    pub fn new(control: &str, token: Option<&str>) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build();
        let host = control
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| a.ip());
        Self {
            agent,
            base: format!("http://{control}"),
            host,
            token: token.map(str::to_owned),
            netns: None,
        }
    }

    /// The same client making every call from inside `ns` (each on a thread that entered it;
    /// kept-alive connections stay in it): for a relay whose API is reached only from there.
    pub fn in_netns(mut self, ns: Arc<Netns>) -> Self {
        self.netns = Some(ns);
        self
    }

    /// `GET /v1/info`.
    pub fn info(&self) -> Result<Value> {
        self.call("GET", "/v1/info", None)
    }

    /// `PUT /v1/rooms/{room}`.
    pub fn put_room(&self, room: &str) -> Result<()> {
        self.call(
            "PUT",
            &format!("/v1/rooms/{room}"),
            Some(&Value::Object(Default::default())),
        )
        .map(drop)
    }

    /// `GET /v1/rooms/{room}`.
    pub fn room(&self, room: &str) -> Result<Value> {
        self.call("GET", &format!("/v1/rooms/{room}"), None)
    }

    /// `DELETE /v1/rooms/{room}`.
    pub fn delete_room(&self, room: &str) -> Result<()> {
        self.call("DELETE", &format!("/v1/rooms/{room}"), None)
            .map(drop)
    }

    /// `PUT /v1/rooms/{room}/participants/{participant}`.
    pub fn put_participant(&self, room: &str, participant: &str, body: &Value) -> Result<Joined> {
        let path = format!("/v1/rooms/{room}/participants/{participant}");
        let reply = self.call("PUT", &path, Some(body))?;
        let addr = reply
            .get("media_address")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("PUT {path}: reply has no media_address: {reply}"))?;
        let mut media_address: SocketAddr = addr
            .parse()
            .with_context(|| format!("PUT {path}: bad media_address {addr:?}"))?;
        // A relay bound to all interfaces answers with the unspecified address: use the
        // control host instead.
        if media_address.ip().is_unspecified()
            && let Some(host) = self.host
        {
            media_address.set_ip(host);
        }
        let ice = reply
            .get("ice")
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        Ok(Joined { media_address, ice })
    }

    /// `DELETE /v1/rooms/{room}/participants/{participant}`.
    pub fn delete_participant(&self, room: &str, participant: &str) -> Result<()> {
        self.call(
            "DELETE",
            &format!("/v1/rooms/{room}/participants/{participant}"),
            None,
        )
        .map(drop)
    }

    /// `GET /v1/rooms/{room}/participants/{participant}`.
    pub fn participant(&self, room: &str, participant: &str) -> Result<Value> {
        self.call(
            "GET",
            &format!("/v1/rooms/{room}/participants/{participant}"),
            None,
        )
    }

    /// `POST .../webrtc/publish` with the client's offer; returns the relay's answer.
    pub fn webrtc_publish(&self, room: &str, participant: &str, offer: &str) -> Result<String> {
        let path = format!("/v1/rooms/{room}/participants/{participant}/webrtc/publish");
        let reply = self.call("POST", &path, Some(&serde_json::json!({ "sdp": offer })))?;
        sdp_of(&path, &reply)
    }

    /// `POST .../webrtc/subscribe`; returns the relay's offer.
    pub fn webrtc_subscribe_offer(&self, room: &str, participant: &str) -> Result<String> {
        let path = format!("/v1/rooms/{room}/participants/{participant}/webrtc/subscribe");
        let reply = self.call("POST", &path, Some(&serde_json::json!({})))?;
        sdp_of(&path, &reply)
    }

    /// `PUT .../webrtc/subscribe` with the client's answer.
    pub fn webrtc_subscribe_answer(
        &self,
        room: &str,
        participant: &str,
        answer: &str,
    ) -> Result<()> {
        let path = format!("/v1/rooms/{room}/participants/{participant}/webrtc/subscribe");
        self.call("PUT", &path, Some(&serde_json::json!({ "sdp": answer })))
            .map(drop)
    }

    /// `POST /v1/rules`; returns the rule's id.
    pub fn post_rule(&self, body: &Value) -> Result<String> {
        let reply = self.call("POST", "/v1/rules", Some(body))?;
        match reply.get("id") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => bail!("POST /v1/rules: reply has no id: {reply}"),
        }
    }

    /// `DELETE /v1/rules/{id}` with the reason the API requires.
    pub fn delete_rule(&self, id: &str, reason: &str) -> Result<()> {
        let body = serde_json::json!({ "reason": reason });
        self.call("DELETE", &format!("/v1/rules/{id}"), Some(&body))
            .map(drop)
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        match &self.netns {
            Some(ns) => ns.run(|| self.call_here(method, path, body))?,
            None => self.call_here(method, path, body),
        }
    }

    fn call_here(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match result {
            Ok(resp) => {
                let text = resp
                    .into_string()
                    .with_context(|| format!("{method} {path}"))?;
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                serde_json::from_str(&text)
                    .with_context(|| format!("{method} {path}: reply is not JSON: {text:?}"))
            }
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/error/message")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .unwrap_or(text);
                bail!("{method} {path}: HTTP {code}: {message}")
            }
            Err(e) => Err(anyhow!("{method} {path}: {e}")),
        }
    }
}

fn sdp_of(path: &str, reply: &Value) -> Result<String> {
    reply
        .get("sdp")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{path}: reply has no sdp: {reply}"))
}
