//! Proofs as the API serves them: hashes in lowercase hex.

use serde::{Deserialize, Serialize};

/// The audit path of entry `seq` in the tree of `tree_size` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub workspace: String,
    pub seq: u64,
    pub tree_size: u64,
    pub leaf_hash: String,
    pub hashes: Vec<String>,
}

/// The proof that the tree of `first` entries is a prefix of the tree of `second`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub workspace: String,
    pub first: u64,
    pub second: u64,
    pub hashes: Vec<String>,
}
