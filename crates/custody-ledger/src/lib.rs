//! The tamper-evidence layer of the audit log, pure and without I/O:
//!
//! - [`merkle`]: RFC 6962 / RFC 9162 Merkle tree hashing, an append-only
//!   [`MerkleFrontier`](merkle::MerkleFrontier), inclusion and consistency proofs
//!   computed from any [`NodeSource`](merkle::NodeSource), and their verification.
//! - [`note`]: C2SP signed notes with Ed25519 keys, in the key formats standard
//!   note verifiers accept.
//! - [`checkpoint`]: C2SP tlog checkpoints (origin, size, root) carried in notes.

pub mod checkpoint;
pub mod merkle;
pub mod note;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use merkle::{Hash, MerkleFrontier, NodeSource, ProofError};
pub use note::{NoteError, NoteSigner, NoteVerifier};
