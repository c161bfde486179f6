//! C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys.
//!
//! A note is a text ending in a newline, a blank line, and signature lines
//! `— <key name> base64(key id ‖ signature)`. The key id is the first four bytes
//! of `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)`. Keys are written in the formats
//! of the reference implementation (the Go `sumdb/note` package), so standard
//! note verifiers accept Custody's verifier key as it is:
//! `<name>+<8 hex digits of key id>+base64(0x01 ‖ public key)`, and private keys
//! `PRIVATE+KEY+<name>+<key id>+base64(0x01 ‖ seed)`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

const ALG_ED25519: u8 = 0x01;
const SIG_PREFIX: &str = "\u{2014} ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("invalid key name `{0}`: it must be non-empty, without spaces or '+'")]
    InvalidName(String),
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    #[error("the note carries no signature by key `{0}`")]
    NoSignatureByKey(String),
    #[error("the signature by key `{0}` does not verify")]
    BadSignature(String),
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::InvalidName(name.to_owned()));
    }
    Ok(())
}

fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn decode_key_parts<'a>(text: &'a str, prefix: &str) -> Result<(&'a str, u32, [u8; 32]), NoteError> {
    let rest = text.trim().strip_prefix(prefix).ok_or(NoteError::MalformedKey("unexpected prefix"))?;
    // The base64 key may itself contain '+', so split off only the first two fields.
    let mut parts = rest.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::MalformedKey("expected name+keyid+key"));
    };
    check_name(name)?;
    let id = u32::from_str_radix(id, 16).map_err(|_| NoteError::MalformedKey("key id is not 8 hex digits"))?;
    let bytes = BASE64.decode(key).map_err(|_| NoteError::MalformedKey("key is not base64"))?;
    let (Some(&ALG_ED25519), Ok(material)) = (bytes.first(), <[u8; 32]>::try_from(&bytes[1..])) else {
        return Err(NoteError::MalformedKey("not an Ed25519 key (type 0x01, 32 bytes)"));
    };
    Ok((name, id, material))
}

/// An Ed25519 note signer.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("NoteSigner").field("name", &self.name).field("id", &format_args!("{:08x}", self.id)).finish()
    }
}

impl NoteSigner {
    /// A signer from a 32-byte Ed25519 seed (the caller supplies the randomness).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self { name: name.to_owned(), id, key })
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64>`.
    pub fn from_private_key(text: &str) -> Result<Self, NoteError> {
        let (name, id, seed) = decode_key_parts(text, "PRIVATE+KEY+")?;
        let signer = Self::from_seed(name, seed)?;
        if signer.id != id {
            return Err(NoteError::MalformedKey("key id does not match the key"));
        }
        Ok(signer)
    }

    pub fn private_key(&self) -> String {
        let mut bytes = vec![ALG_ED25519];
        bytes.extend_from_slice(self.key.as_bytes());
        format!("PRIVATE+KEY+{}+{:08x}+{}", self.name, self.id, BASE64.encode(bytes))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), id: self.id, key: self.key.verifying_key() }
    }

    /// Signs `text` (which must end in a newline) and returns the whole note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_be_bytes().to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!("{text}\n{SIG_PREFIX}{} {}\n", self.name, BASE64.encode(blob)))
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::MalformedNote("the text must end in a newline"));
    }
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::MalformedNote("control characters other than newline"));
    }
    Ok(())
}

/// An Ed25519 note verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key `<name>+<id>+<base64(0x01 ‖ public key)>`.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let (name, id, public) = decode_key_parts(text, "")?;
        if key_id(name, &public) != id {
            return Err(NoteError::MalformedKey("key id does not match the key"));
        }
        let key =
            VerifyingKey::from_bytes(&public).map_err(|_| NoteError::MalformedKey("not a valid Ed25519 point"))?;
        Ok(Self { name: name.to_owned(), id, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key in its text form.
    pub fn to_key_string(&self) -> String {
        let mut bytes = vec![ALG_ED25519];
        bytes.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, BASE64.encode(bytes))
    }

    /// Checks the note's signature by this key and returns the signed text.
    /// Signatures by other keys are ignored, as the specification requires.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let split = note.rfind("\n\n").ok_or(NoteError::MalformedNote("no blank line before the signatures"))?;
        let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
        check_text(text)?;
        if !signatures.ends_with('\n') {
            return Err(NoteError::MalformedNote("signature lines must end in a newline"));
        }
        for line in signatures.lines() {
            let line =
                line.strip_prefix(SIG_PREFIX).ok_or(NoteError::MalformedNote("signature line without em dash"))?;
            let (name, blob) =
                line.split_once(' ').ok_or(NoteError::MalformedNote("signature line without a space"))?;
            let blob = BASE64.decode(blob).map_err(|_| NoteError::MalformedNote("signature is not base64"))?;
            if name != self.name || blob.len() < 4 || blob[..4] != self.id.to_be_bytes() {
                continue;
            }
            let signature =
                Signature::from_slice(&blob[4..]).map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            return self
                .key
                .verify(text.as_bytes(), &signature)
                .map(|()| text)
                .map_err(|_| NoteError::BadSignature(self.name.clone()));
        }
        Err(NoteError::NoSignatureByKey(self.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example key pair and note of the Go sumdb/note package documentation
    // ("PeterNeumann"), a published test vector for the formats and signatures.
    const GO_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn the_reference_implementations_example_verifies_and_keys_round_trip() {
        let verifier = NoteVerifier::parse(GO_VKEY).unwrap();
        let text = verifier.open(GO_NOTE).unwrap();
        assert!(text.starts_with("If you think"));
        let signer = NoteSigner::from_private_key(GO_SKEY).unwrap();
        assert_eq!(signer.verifier(), verifier);
        assert_eq!(signer.verifier().to_key_string(), GO_VKEY);
        assert_eq!(signer.private_key(), GO_SKEY);
        // Ed25519 is deterministic: signing the same text gives the published note.
        assert_eq!(signer.sign(text).unwrap(), GO_NOTE);
    }

    #[test]
    fn altered_notes_and_foreign_keys_are_rejected() {
        let signer = NoteSigner::from_seed("custody.test/audit", [7; 32]).unwrap();
        let note = signer.sign("hello\n").unwrap();
        let verifier = signer.verifier();
        assert_eq!(verifier.open(&note).unwrap(), "hello\n");
        let altered = note.replacen("hello", "hullo", 1);
        assert_eq!(verifier.open(&altered), Err(NoteError::BadSignature("custody.test/audit".into())));
        let other = NoteSigner::from_seed("custody.test/audit", [8; 32]).unwrap().sign("hello\n").unwrap();
        assert!(matches!(verifier.open(&other), Err(NoteError::NoSignatureByKey(_))));
        assert!(signer.sign("no newline").is_err());
        assert!(NoteSigner::from_seed("has space", [1; 32]).is_err());
        assert!(NoteVerifier::parse("custody+00000000+AAAA").is_err());
    }
}
