//! Workspace names: the unit of isolation for keys, logs and retention.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated workspace name: 1 to 64 characters of `a-z`, `0-9`, `-`, `_`, `.`,
/// starting with a letter or digit, so that it is safe in URLs, file names and
/// checkpoint origins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkspaceName(String);

/// The workspace that holds Custody's own events about keys that belong to no
/// single workspace (the bootstrap admin key). Callers cannot write to it.
pub const SYSTEM_WORKSPACE: &str = "custody-system";

impl WorkspaceName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, String> {
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
        let starts_well = s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if s.is_empty() || s.len() > Self::MAX_LEN || !starts_well || !s.chars().all(valid_char) {
            return Err(format!(
                "`{}` is not a valid workspace name: use 1 to 64 characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit",
                truncate(s, 80)
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn system() -> Self {
        Self(SYSTEM_WORKSPACE.to_owned())
    }

    pub fn is_system(&self) -> bool {
        self.0 == SYSTEM_WORKSPACE
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a classification label (`public`, `confidential`, …): the same
/// alphabet as workspace names, since both name directories and partitions.
pub fn check_label(s: &str) -> Result<(), String> {
    WorkspaceName::parse(s).map(|_| ()).map_err(|_| {
        format!(
            "`{}` is not a valid label: use 1 to 64 characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit",
            truncate(s, 80)
        )
    })
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

impl TryFrom<String> for WorkspaceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<WorkspaceName> for String {
    fn from(w: WorkspaceName) -> String {
        w.0
    }
}

impl fmt::Display for WorkspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_url_safe() {
        for good in ["acme", "a", "team-7.prod_eu", &"x".repeat(64)] {
            assert!(WorkspaceName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Acme", "-acme", "a/b", "a b", "ä", &"x".repeat(65)] {
            assert!(WorkspaceName::parse(bad).is_err(), "{bad}");
        }
    }
}
