//! The server on a loopback port, for the API tests.
#![allow(dead_code)]

use std::time::Duration;

use custody_client::Client;
use custody_server::{RunningServer, ServerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const ADMIN: &str = "test-bootstrap-key-0123456789abcdef";

pub struct TestServer {
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        config.bootstrap_key = Some(ADMIN.to_owned());
        config.busy_timeout = Duration::from_millis(200);
        configure(&mut config);
        let server = custody_server::start(config).await.unwrap();
        let base = format!("http://{}", server.local_addr);
        Self { server, dir, base, http: reqwest::Client::new() }
    }

    pub fn client(&self, key: &str) -> Client {
        Client::new(&self.base, key).unwrap()
    }

    pub async fn post(&self, key: &str, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn traces(&self, key: &str, records: &[Value]) -> (StatusCode, Value) {
        self.post(key, "/api/v1/traces", json!({ "records": records }).to_string()).await
    }

    pub async fn audit(&self, key: &str, n: usize) -> (StatusCode, Value) {
        let event = json!({"workspace": "acme", "kind": "authz.decision",
            "principal": {"type": "agent", "id": "agent:support"}, "action": "email.send",
            "resource": {"type": "email", "id": format!("out/{n}")}, "decision": "allow"});
        self.post(key, "/api/v1/audit/events", event.to_string()).await
    }

    pub async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn readyz(&self) -> Value {
        self.http.get(format!("{}/readyz", self.base)).send().await.unwrap().json().await.unwrap()
    }

    pub async fn key(&self, workspace: &str, scope: &str) -> String {
        self.client(ADMIN).create_key(workspace, scope, Some("test")).await.unwrap().0
    }
}

pub fn acme() -> custody_model::WorkspaceName {
    custody_model::WorkspaceName::parse("acme").unwrap()
}

pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}
