//! Secrets at rest: provider credentials are sealed with ChaCha20-Poly1305 under a key kept
//! outside the database (a key file in the data directory, or `MUSTER_SECRET_KEY`/`_FILE`), so a
//! copy of the database alone reveals nothing.
//!
//! Sealed text is `v1:` + base64(nonce ‖ ciphertext); the version names the key scheme, so keys
//! can be rotated later without guessing.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

const PREFIX: &str = "v1:";

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "secret.key";

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key must be 32 bytes, base64-encoded")]
    BadKey,
    #[error("cannot read or write the key file {0}: {1}")]
    KeyFile(String, std::io::Error),
    #[error("a stored secret could not be opened (wrong key, or damaged)")]
    Open,
}

impl SecretBox {
    /// A box for a 32-byte key.
    pub fn new(key: &[u8]) -> Result<Self, SecretError> {
        if key.len() != 32 {
            return Err(SecretError::BadKey);
        }
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
        })
    }

    /// A box for a base64 key (as `MUSTER_SECRET_KEY` holds it).
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let key = STANDARD
            .decode(text.trim())
            .map_err(|_| SecretError::BadKey)?;
        Self::new(&key)
    }

    /// The key in `path`, created (random, mode 0600) when missing.
    pub fn from_key_file(path: &Path) -> Result<Self, SecretError> {
        let fail = |e| SecretError::KeyFile(path.display().to_string(), e);
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(fail)?;
                }
                // Written under a temporary name, private from its first byte, then renamed:
                // a crash leaves no half-written key, and no moment lets others read it.
                let tmp = path.with_extension("tmp");
                let _ = std::fs::remove_file(&tmp);
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                {
                    use std::io::Write;
                    let mut file = options.open(&tmp).map_err(fail)?;
                    file.write_all(STANDARD.encode(key).as_bytes())
                        .map_err(fail)?;
                    file.sync_all().map_err(fail)?;
                }
                std::fs::rename(&tmp, path).map_err(fail)?;
                Self::new(&key)
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// A box with a fresh random key (tests).
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self::new(&key).unwrap_or_else(|_| unreachable!("32 bytes"))
    }

    /// Seals `plaintext`; the answer is safe to store.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let body = sealed.strip_prefix(PREFIX).ok_or(SecretError::Open)?;
        let bytes = STANDARD.decode(body).map_err(|_| SecretError::Open)?;
        if bytes.len() < 12 + 16 {
            return Err(SecretError::Open);
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SecretError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let b = SecretBox::random();
        let sealed = b.seal(b"hcloud-token-123");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("hcloud-token-123"));
        assert_ne!(
            sealed,
            b.seal(b"hcloud-token-123"),
            "a fresh nonce each time"
        );
        assert_eq!(b.open(&sealed).unwrap(), b"hcloud-token-123");
        assert!(
            SecretBox::random().open(&sealed).is_err(),
            "another key cannot open it"
        );
        let mut damaged = sealed.clone();
        damaged.pop();
        damaged.push('A');
        assert!(b.open(&damaged).is_err());
        assert!(b.open("plain").is_err());
    }

    #[test]
    fn key_file_is_created_once_and_private() {
        let dir = std::env::temp_dir().join(format!("muster-key-{}", uuid::Uuid::now_v7()));
        let path = dir.join("keys/secret.key");
        let a = SecretBox::from_key_file(&path).unwrap();
        let sealed = a.seal(b"x");
        let b = SecretBox::from_key_file(&path).unwrap();
        assert_eq!(b.open(&sealed).unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(format!("{a:?}").contains("redacted"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
