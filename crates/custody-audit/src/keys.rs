//! API keys: generation, hashing, constant-time checks, and their store.
//!
//! A key reads `cust_<id>_<secret>`: the id is public (it names the key in
//! listings and in audit events), the secret is 32 random bytes. Only
//! SHA-256 of the whole token is stored. A bootstrap key supplied by the
//! operator may have any form; it is stored under the id `bootstrap`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use custody_model::{ApiKeyInfo, Scope, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::StoreError;

/// The id under which an operator-supplied bootstrap key of free form is stored.
pub const BOOTSTRAP_KEY_ID: &str = "bootstrap";
const TOKEN_PREFIX: &str = "cust_";

/// A stored key: its public description and the hash of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub info: ApiKeyInfo,
    pub token_hash: [u8; 32],
}

impl KeyRecord {
    /// Whether `token` is this key, compared in constant time.
    pub fn matches(&self, token: &str) -> bool {
        bool::from(hash_token(token).ct_eq(&self.token_hash))
    }
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The id a token claims: `cust_<id>_<secret>` gives `<id>`; anything else is
/// looked up as the operator's bootstrap key.
pub fn token_id(token: &str) -> &str {
    token
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .map(|(id, _)| id)
        .filter(|id| !id.is_empty())
        .unwrap_or(BOOTSTRAP_KEY_ID)
}

/// A new random key: `(id, token)`.
pub fn generate_token() -> Result<(String, String), getrandom::Error> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id)?;
    getrandom::fill(&mut secret)?;
    let id = hex::encode(id);
    Ok((id.clone(), format!("{TOKEN_PREFIX}{id}_{}", hex::encode(secret))))
}

/// Where keys live. Lookups are on every request, so implementations keep them
/// in memory; revocation must take effect for the very next lookup.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn insert(&self, record: KeyRecord) -> Result<(), StoreError>;
    /// Marks a key revoked; returns it, or `None` if there is no such key.
    async fn revoke(&self, id: &str, at: Timestamp) -> Result<Option<KeyRecord>, StoreError>;
    fn get(&self, id: &str) -> Option<KeyRecord>;
    fn list(&self) -> Vec<KeyRecord>;
}

/// Keys in their own SQLite file, apart from the audit log's write path.
pub struct SqliteKeyStore {
    conn: Arc<Mutex<Connection>>,
    cache: RwLock<HashMap<String, KeyRecord>>,
}

const KEYS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    workspace  TEXT,
    scope      TEXT NOT NULL,
    label      TEXT,
    token_hash BLOB NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);";

impl SqliteKeyStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let unavailable = |e: rusqlite::Error| StoreError::Unavailable(format!("{}: {e}", path.display()));
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
        conn.execute_batch(KEYS_SCHEMA).map_err(unavailable)?;
        let mut cache = HashMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT id, workspace, scope, label, token_hash, created_at, revoked_at FROM api_keys")
                .map_err(unavailable)?;
            let rows = stmt.query_map([], read_row).map_err(unavailable)?;
            for row in rows {
                let record = row.map_err(unavailable)??;
                cache.insert(record.info.id.clone(), record);
            }
        }
        Ok(Self { conn: Arc::new(Mutex::new(conn)), cache: RwLock::new(cache) })
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(|_| StoreError::Unavailable("key store lock poisoned".into()))?;
            f(&conn).map_err(|e| StoreError::Unavailable(e.to_string()))
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }
}

type RowResult = Result<KeyRecord, StoreError>;

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RowResult> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("api key row: {what}"));
    let scope: String = r.get(2)?;
    let hash: Vec<u8> = r.get(4)?;
    let created: String = r.get(5)?;
    let revoked: Option<String> = r.get(6)?;
    let record = (|| {
        Ok(KeyRecord {
            info: ApiKeyInfo {
                id: r.get(0).map_err(|_| corrupt("id"))?,
                workspace: r.get(1).map_err(|_| corrupt("workspace"))?,
                scope: Scope::parse(&scope).map_err(|_| corrupt("scope"))?,
                label: r.get(3).map_err(|_| corrupt("label"))?,
                created_at: Timestamp::parse(&created).map_err(|_| corrupt("created_at"))?,
                revoked_at: match revoked {
                    Some(t) => Some(Timestamp::parse(&t).map_err(|_| corrupt("revoked_at"))?),
                    None => None,
                },
            },
            token_hash: hash.try_into().map_err(|_| corrupt("token_hash"))?,
        })
    })();
    Ok(record)
}

#[async_trait]
impl KeyStore for SqliteKeyStore {
    async fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
        let r = record.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO api_keys (id, workspace, scope, label, token_hash, created_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    r.info.id,
                    r.info.workspace,
                    r.info.scope.as_str(),
                    r.info.label,
                    &r.token_hash[..],
                    r.info.created_at.to_string(),
                    r.info.revoked_at.map(|t| t.to_string()),
                ],
            )
        })
        .await?;
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(record.info.id.clone(), record);
        }
        Ok(())
    }

    async fn revoke(&self, id: &str, at: Timestamp) -> Result<Option<KeyRecord>, StoreError> {
        let key = id.to_owned();
        let changed = self
            .write(move |conn| {
                conn.execute(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![key, at.to_string()],
                )?;
                conn.query_row("SELECT revoked_at FROM api_keys WHERE id = ?1", params![key], |r| {
                    r.get::<_, Option<String>>(0)
                })
                .optional()
            })
            .await?;
        let Some(revoked_at) = changed else { return Ok(None) };
        let mut cache = self.cache.write().map_err(|_| StoreError::Unavailable("key cache lock poisoned".into()))?;
        let Some(record) = cache.get_mut(id) else { return Ok(None) };
        record.info.revoked_at = revoked_at.and_then(|t| Timestamp::parse(&t).ok()).or(Some(at));
        Ok(Some(record.clone()))
    }

    fn get(&self, id: &str) -> Option<KeyRecord> {
        self.cache.read().ok()?.get(id).cloned()
    }

    fn list(&self) -> Vec<KeyRecord> {
        let mut all: Vec<KeyRecord> = self.cache.read().map(|c| c.values().cloned().collect()).unwrap_or_default();
        all.sort_by(|a, b| (a.info.created_at, &a.info.id).cmp(&(b.info.created_at, &b.info.id)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, token: &str) -> KeyRecord {
        KeyRecord {
            info: ApiKeyInfo {
                id: id.into(),
                workspace: Some("acme".into()),
                scope: Scope::Read,
                label: None,
                created_at: Timestamp::now(),
                revoked_at: None,
            },
            token_hash: hash_token(token),
        }
    }

    #[test]
    fn tokens_name_their_id_and_match_only_themselves() {
        let (id, token) = generate_token().unwrap();
        assert_eq!(token_id(&token), id);
        assert_eq!(token_id("any-operator-chosen-secret"), BOOTSTRAP_KEY_ID);
        let r = record(&id, &token);
        assert!(r.matches(&token));
        assert!(!r.matches(&token.replace('a', "b")));
    }

    #[tokio::test]
    async fn keys_persist_and_revocation_takes_effect_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let store = SqliteKeyStore::open(&path).unwrap();
        store.insert(record("k1", "t1")).await.unwrap();
        assert!(store.get("k1").unwrap().info.revoked_at.is_none());
        let revoked = store.revoke("k1", Timestamp::now()).await.unwrap().unwrap();
        assert!(revoked.info.revoked_at.is_some());
        assert!(store.get("k1").unwrap().info.revoked_at.is_some());
        assert!(store.revoke("nope", Timestamp::now()).await.unwrap().is_none());
        drop(store);
        let reopened = SqliteKeyStore::open(&path).unwrap();
        assert!(reopened.get("k1").unwrap().info.revoked_at.is_some());
        assert_eq!(reopened.list().len(), 1);
    }
}
