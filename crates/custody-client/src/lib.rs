//! A typed client for Custody's HTTP API.
//!
//! Every receipt an append returns is checked before the caller sees it: the
//! checkpoint's signature against the log's public key, the checkpoint's size
//! and origin, and the leaf hash against the event that was sent. A caller that
//! holds a receipt from this client holds evidence, not a promise.

use std::sync::Mutex;

use custody_ledger::merkle::{hash_leaf, verify_consistency, verify_inclusion};
use custody_ledger::{Checkpoint, Hash, NoteVerifier};
use custody_model::{ApiKeyInfo, AuditEvent, ConsistencyProof, InclusionProof, Receipt, entry_bytes};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

mod traces;
pub use traces::{TraceIngest, TraceQuery, TraceRejection, verify_trace_row};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("the server answered {status} {code}: {message}")]
    Api { status: u16, code: String, message: String },
    #[error("the server's answer does not verify: {0}")]
    Verification(String),
    #[error("the server's answer is not what this client understands: {0}")]
    Decode(String),
    #[error("invalid server URL `{0}`: use http://HOST:PORT")]
    BadUrl(String),
    #[error("the server is busy ({message}); retry after {retry_after_secs} s")]
    Busy { retry_after_secs: u64, message: String },
}

impl ClientError {
    /// The HTTP status of an API error, if it is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Busy { .. } => Some(429),
            _ => None,
        }
    }
}

/// Filters of an audit search (`GET /api/v1/audit/events`).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub workspace: Option<String>,
    pub principal: Option<String>,
    pub action: Option<String>,
    pub kind: Option<String>,
    pub decision: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub action_id: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

impl AuditQuery {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let fields = [
            ("workspace", &self.workspace),
            ("principal", &self.principal),
            ("action", &self.action),
            ("kind", &self.kind),
            ("decision", &self.decision),
            ("resource_type", &self.resource_type),
            ("resource_id", &self.resource_id),
            ("action_id", &self.action_id),
            ("since", &self.since),
            ("until", &self.until),
            ("cursor", &self.cursor),
        ];
        query_pairs(fields, self.limit)
    }
}

/// The filters that are set, and the page size, as query-string pairs.
pub(crate) fn query_pairs<const N: usize>(
    fields: [(&'static str, &Option<String>); N],
    limit: Option<usize>,
) -> Vec<(&'static str, String)> {
    let mut pairs: Vec<(&'static str, String)> =
        fields.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k, v))).collect();
    if let Some(limit) = limit {
        pairs.push(("limit", limit.to_string()));
    }
    pairs
}

/// One page of stored events, as the API shows them.
#[derive(Debug, Clone, Deserialize)]
pub struct EventPage {
    pub events: Vec<Value>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    verifier: Mutex<Option<NoteVerifier>>,
}

impl Client {
    /// A client of the server at `base_url` (`http://127.0.0.1:7300`) using `key`.
    pub fn new(base_url: &str, key: &str) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl(base_url.to_owned()));
        }
        let http = reqwest::Client::builder().build()?;
        Ok(Self { http, base, key: key.to_owned(), verifier: Mutex::new(None) })
    }

    /// Pins the log's verifier key instead of fetching it from the server.
    pub fn with_verifier(self, verifier: NoteVerifier) -> Self {
        if let Ok(mut slot) = self.verifier.lock() {
            *slot = Some(verifier);
        }
        self
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key)
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let text = response.text().await.unwrap_or_default();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let message = serde_json::from_str::<ErrorBody>(&text).map(|b| b.error.message).unwrap_or(text);
            return Err(ClientError::Busy { retry_after_secs: retry_after.unwrap_or(1), message });
        }
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => {
                ClientError::Api { status: status.as_u16(), code: body.error.code, message: body.error.message }
            }
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: status.canonical_reason().unwrap_or("error").to_owned(),
                message: text,
            },
        })
    }

    pub(crate) async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        let bytes = response.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn text(&self, request: RequestBuilder) -> Result<String, ClientError> {
        Ok(self.send(request).await?.text().await?)
    }

    /// The log's verifier key (fetched once, unless pinned).
    pub async fn verifier(&self) -> Result<NoteVerifier, ClientError> {
        if let Some(v) = self.verifier.lock().ok().and_then(|v| v.clone()) {
            return Ok(v);
        }
        let text = self.text(self.request(Method::GET, "/api/v1/audit/public-key")).await?;
        let verifier = NoteVerifier::parse(text.trim()).map_err(|e| ClientError::Decode(e.to_string()))?;
        if let Ok(mut slot) = self.verifier.lock() {
            *slot = Some(verifier.clone());
        }
        Ok(verifier)
    }

    /// Appends one event; returns its verified receipt once it is durable.
    pub async fn append(&self, event: &AuditEvent) -> Result<Receipt, ClientError> {
        let mut receipts = self.append_batch(std::slice::from_ref(event)).await?;
        receipts.pop().ok_or_else(|| ClientError::Decode("no receipt in the answer".into()))
    }

    /// Appends events in one durable batch; returns their verified receipts.
    pub async fn append_batch(&self, events: &[AuditEvent]) -> Result<Vec<Receipt>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            receipts: Vec<Receipt>,
        }
        let body = json!({ "events": events });
        let answer: Answer = self.json(self.request(Method::POST, "/api/v1/audit/events").json(&body)).await?;
        if answer.receipts.len() != events.len() {
            return Err(ClientError::Verification(format!(
                "{} events sent, {} receipts returned",
                events.len(),
                answer.receipts.len()
            )));
        }
        let verifier = self.verifier().await?;
        for (event, receipt) in events.iter().zip(&answer.receipts) {
            verify_receipt(&verifier, event, receipt)?;
        }
        Ok(answer.receipts)
    }

    /// Fetches the inclusion proof of a receipt and checks it against the receipt's checkpoint.
    pub async fn verify_inclusion(&self, receipt: &Receipt) -> Result<(), ClientError> {
        let verifier = self.verifier().await?;
        let checkpoint = Checkpoint::open(&receipt.checkpoint, &verifier)
            .map_err(|e| ClientError::Verification(format!("receipt checkpoint: {e}")))?;
        let proof = self.inclusion_proof(&receipt.workspace, receipt.seq, receipt.tree_size).await?;
        let leaf = decode_hash(&receipt.leaf_hash)?;
        verify_inclusion(&leaf, receipt.seq, receipt.tree_size, &decode_hashes(&proof.hashes)?, &checkpoint.root)
            .map_err(|e| ClientError::Verification(format!("inclusion of seq {}: {e}", receipt.seq)))
    }

    /// Checks that the log of `workspace` grew from checkpoint `older` to `newer`
    /// without changing history.
    pub async fn verify_growth(
        &self,
        workspace: &str,
        older: &Checkpoint,
        newer: &Checkpoint,
    ) -> Result<(), ClientError> {
        let proof = self.consistency_proof(workspace, older.size, newer.size).await?;
        verify_consistency(older.size, newer.size, &older.root, &newer.root, &decode_hashes(&proof.hashes)?)
            .map_err(|e| ClientError::Verification(format!("consistency {} -> {}: {e}", older.size, newer.size)))
    }

    pub async fn query(&self, query: &AuditQuery) -> Result<EventPage, ClientError> {
        self.json(self.request(Method::GET, "/api/v1/audit/events").query(&query.pairs())).await
    }

    /// The latest signed checkpoint of a workspace: the note and its verified content.
    pub async fn checkpoint(&self, workspace: &str) -> Result<(String, Checkpoint), ClientError> {
        let note =
            self.text(self.request(Method::GET, "/api/v1/audit/checkpoint").query(&[("workspace", workspace)])).await?;
        let checkpoint = Checkpoint::open(&note, &self.verifier().await?)
            .map_err(|e| ClientError::Verification(format!("checkpoint: {e}")))?;
        Ok((note, checkpoint))
    }

    pub async fn inclusion_proof(
        &self,
        workspace: &str,
        seq: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, ClientError> {
        let query =
            [("workspace", workspace.to_owned()), ("seq", seq.to_string()), ("tree_size", tree_size.to_string())];
        self.json(self.request(Method::GET, "/api/v1/audit/proofs/inclusion").query(&query)).await
    }

    pub async fn consistency_proof(
        &self,
        workspace: &str,
        first: u64,
        second: u64,
    ) -> Result<ConsistencyProof, ClientError> {
        let query = [("workspace", workspace.to_owned()), ("first", first.to_string()), ("second", second.to_string())];
        self.json(self.request(Method::GET, "/api/v1/audit/proofs/consistency").query(&query)).await
    }

    /// Creates a key; returns the secret token (shown only now) and the key's description.
    /// The chain of custody of an action (`GET /api/v1/custody/actions/{id}`),
    /// as the server assembled it. Check it with [`custody_chain::verify_bundle`].
    pub async fn action_report(&self, workspace: Option<&str>, action_id: &str) -> Result<Vec<u8>, ClientError> {
        let mut request = self.request(Method::GET, &format!("/api/v1/custody/actions/{}", traces::segment(action_id)));
        if let Some(workspace) = workspace {
            request = request.query(&[("workspace", workspace)]);
        }
        Ok(self.send(request).await?.bytes().await?.to_vec())
    }

    pub async fn create_key(
        &self,
        workspace: &str,
        scope: &str,
        label: Option<&str>,
    ) -> Result<(String, ApiKeyInfo), ClientError> {
        #[derive(Deserialize)]
        struct Created {
            key: String,
            info: ApiKeyInfo,
        }
        let body = json!({"workspace": workspace, "scope": scope, "label": label});
        let created: Created = self.json(self.request(Method::POST, "/api/v1/keys").json(&body)).await?;
        Ok((created.key, created.info))
    }

    pub async fn list_keys(&self, workspace: Option<&str>) -> Result<Vec<ApiKeyInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Listed {
            keys: Vec<ApiKeyInfo>,
        }
        let mut request = self.request(Method::GET, "/api/v1/keys");
        if let Some(ws) = workspace {
            request = request.query(&[("workspace", ws)]);
        }
        Ok(self.json::<Listed>(request).await?.keys)
    }

    pub async fn revoke_key(&self, id: &str) -> Result<ApiKeyInfo, ClientError> {
        #[derive(Deserialize)]
        struct Revoked {
            info: ApiKeyInfo,
        }
        Ok(self.json::<Revoked>(self.request(Method::DELETE, &format!("/api/v1/keys/{id}"))).await?.info)
    }

    /// `GET /readyz`: whether at least one store can take writes (see `ready` / `degraded` in the body).
    pub async fn ready(&self) -> Result<bool, ClientError> {
        let response = self.http.get(format!("{}/readyz", self.base)).send().await?;
        Ok(response.status() == StatusCode::OK)
    }
}

/// Checks a receipt against the event it is for: the checkpoint's signature, size
/// and origin, and the leaf hash recomputed from the event as sent.
pub fn verify_receipt(
    verifier: &NoteVerifier,
    event: &AuditEvent,
    receipt: &Receipt,
) -> Result<Checkpoint, ClientError> {
    let fail = |m: String| ClientError::Verification(m);
    let checkpoint =
        Checkpoint::open(&receipt.checkpoint, verifier).map_err(|e| fail(format!("receipt checkpoint: {e}")))?;
    if checkpoint.size != receipt.tree_size || receipt.seq >= receipt.tree_size {
        return Err(fail(format!(
            "receipt says seq {} in a tree of {}, its checkpoint says {}",
            receipt.seq, receipt.tree_size, checkpoint.size
        )));
    }
    if receipt.workspace != event.workspace.as_str() || !checkpoint.origin.ends_with(&format!("/{}", receipt.workspace))
    {
        return Err(fail(format!("receipt is for log `{}`, not for workspace {}", checkpoint.origin, event.workspace)));
    }
    let leaf = hash_leaf(&entry_bytes(&event.canonical(), receipt.seq, &receipt.recorded_at));
    if hex::encode(leaf) != receipt.leaf_hash {
        return Err(fail(format!("receipt for seq {} does not cover the event that was sent", receipt.seq)));
    }
    Ok(checkpoint)
}

fn decode_hash(hex_hash: &str) -> Result<Hash, ClientError> {
    hex::decode(hex_hash)
        .ok()
        .and_then(|b| Hash::try_from(b.as_slice()).ok())
        .ok_or_else(|| ClientError::Decode(format!("`{hex_hash}` is not a hex SHA-256 hash")))
}

fn decode_hashes(list: &[String]) -> Result<Vec<Hash>, ClientError> {
    list.iter().map(|h| decode_hash(h)).collect()
}
