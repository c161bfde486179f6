//! API-key scopes and the public description of a key (never its secret).

use serde::{Deserialize, Serialize};

use crate::timestamp::Timestamp;

/// What a key may do. `admin` includes every other scope within its workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "audit:write")]
    AuditWrite,
    #[serde(rename = "trace:write")]
    TraceWrite,
    #[serde(rename = "read")]
    Read,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::AuditWrite, Scope::TraceWrite, Scope::Read, Scope::Admin];

    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::AuditWrite => "audit:write",
            Scope::TraceWrite => "trace:write",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope `{s}`: use one of audit:write, trace:write, read, admin"))
    }

    /// Whether a key with this scope may do what `needed` allows.
    pub fn permits(&self, needed: Scope) -> bool {
        *self == Scope::Admin || *self == needed
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key as listings show it. `workspace` is `None` for a key valid in every
/// workspace (the bootstrap admin key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub workspace: Option<String>,
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_permits_everything_and_others_only_themselves() {
        for needed in Scope::ALL {
            assert!(Scope::Admin.permits(needed));
        }
        assert!(Scope::Read.permits(Scope::Read));
        assert!(!Scope::Read.permits(Scope::AuditWrite));
        assert!(!Scope::AuditWrite.permits(Scope::Admin));
        assert_eq!(Scope::parse("trace:write"), Ok(Scope::TraceWrite));
        assert!(Scope::parse("root").is_err());
    }
}
