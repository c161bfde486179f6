//! The log's checkpoint signing key on disk.

use std::io::Write;
use std::path::Path;

use custody_ledger::{NoteError, NoteSigner};

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read the signing key {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot create the signing key {path}: {reason}")]
    Create { path: String, reason: String },
    #[error("the signing key {path} is not a note private key (PRIVATE+KEY+name+id+key): {source}")]
    Malformed { path: String, source: NoteError },
}

/// Loads the key at `path`, or creates a new Ed25519 key named `name` there with
/// mode 0600 when the file does not exist. Returns the signer and whether it was created.
pub fn load_or_create(path: &Path, name: &str) -> Result<(NoteSigner, bool), SigningKeyError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let signer = NoteSigner::from_private_key(text.trim())
                .map_err(|source| SigningKeyError::Malformed { path: shown.clone(), source })?;
            warn_if_readable_by_others(path);
            Ok((signer, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let create = |reason: String| SigningKeyError::Create { path: shown.clone(), reason };
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| create(e.to_string()))?;
            let signer = NoteSigner::from_seed(name, seed).map_err(|e| create(e.to_string()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| create(e.to_string()))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(|e| create(e.to_string()))?;
            file.write_all(format!("{}\n", signer.private_key()).as_bytes()).map_err(|e| create(e.to_string()))?;
            file.sync_all().map_err(|e| create(e.to_string()))?;
            Ok((signer, true))
        }
        Err(e) => Err(SigningKeyError::Read { path: shown, reason: e.to_string() }),
    }
}

/// Reads an existing key without creating one.
pub fn load(path: &Path) -> Result<NoteSigner, SigningKeyError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SigningKeyError::Read { path: shown.clone(), reason: e.to_string() })?;
    NoteSigner::from_private_key(text.trim()).map_err(|source| SigningKeyError::Malformed { path: shown, source })
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the signing key is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_private_to_its_owner_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.key");
        let (signer, created) = load_or_create(&path, "custody.test/audit").unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (again, created) = load_or_create(&path, "ignored").unwrap();
        assert!(!created);
        assert_eq!(again.verifier(), signer.verifier());
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(load(&path), Err(SigningKeyError::Malformed { .. })));
    }
}
