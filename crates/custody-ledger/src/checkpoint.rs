//! C2SP transparency-log checkpoints (c2sp.org/tlog-checkpoint): the note text
//! `<origin>\n<tree size>\n<base64 root hash>\n`, signed by the log's key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::merkle::Hash;
use crate::note::{NoteError, NoteSigner, NoteVerifier};

/// The state of one log: which log (origin), how many entries, and their root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
}

impl Checkpoint {
    /// The note text of this checkpoint.
    pub fn to_text(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(self.root))
    }

    /// Parses checkpoint text (extension lines after the root are allowed and ignored).
    pub fn parse_text(text: &str) -> Result<Self, CheckpointError> {
        let mut lines = text.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or(CheckpointError::Malformed("no origin line"))?;
        let size = lines.next().ok_or(CheckpointError::Malformed("no tree size line"))?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(CheckpointError::Malformed("tree size is not a decimal number"));
        }
        let size = size.parse().map_err(|_| CheckpointError::Malformed("tree size out of range"))?;
        let root = lines.next().ok_or(CheckpointError::Malformed("no root hash line"))?;
        let root = BASE64.decode(root).map_err(|_| CheckpointError::Malformed("root hash is not base64"))?;
        let root =
            Hash::try_from(root.as_slice()).map_err(|_| CheckpointError::Malformed("root hash is not 32 bytes"))?;
        Ok(Self { origin: origin.to_owned(), size, root })
    }

    /// The signed note of this checkpoint.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        Ok(signer.sign(&self.to_text())?)
    }

    /// Verifies a signed checkpoint note and parses it.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Self, CheckpointError> {
        Self::parse_text(verifier.open(note)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_sign_open_and_refuse_tampering() {
        let signer = NoteSigner::from_seed("custody.test/audit", [3; 32]).unwrap();
        let cp = Checkpoint { origin: "custody.test/audit/acme".into(), size: 42, root: [9; 32] };
        let note = cp.sign(&signer).unwrap();
        assert!(note.starts_with("custody.test/audit/acme\n42\nCQkJ"));
        assert_eq!(Checkpoint::open(&note, &signer.verifier()).unwrap(), cp);
        let forged = note.replacen("\n42\n", "\n41\n", 1);
        assert!(Checkpoint::open(&forged, &signer.verifier()).is_err());
        assert!(Checkpoint::parse_text("o\n042\nCQ==\n").is_err());
        assert!(Checkpoint::parse_text("o\n1\nCQ==\n").is_err());
    }
}
