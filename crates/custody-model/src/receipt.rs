//! The receipt a writer gets once its event is durable.

use serde::{Deserialize, Serialize};

use crate::timestamp::Timestamp;

/// Proof of a durable append: where the event sits in its workspace's log and the
/// signed checkpoint of the tree that contains it. `leaf_hash` is lowercase hex
/// of SHA-256(0x00 ‖ entry bytes); `checkpoint` is a C2SP signed note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub workspace: String,
    pub seq: u64,
    pub leaf_hash: String,
    pub tree_size: u64,
    pub checkpoint: String,
    pub recorded_at: Timestamp,
}
