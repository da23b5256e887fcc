//! Encryption of API-key secrets, byte-compatible with PostgreSQL's pgcrypto.
//!
//! What we store in `api_keys.secret_ciphertext` is a binary (not armored) OpenPGP
//! symmetric-key message, so PostgreSQL can read it with `pgp_sym_decrypt(secret_ciphertext, key)`
//! (or `pgp_sym_decrypt_bytea`), and what PostgreSQL writes with `pgp_sym_encrypt(text, key)`
//! decrypts here.
//!
//! # Implementation
//!
//! The OpenPGP work is done by the maintained `pgp` crate (rpgp 0.21): string-to-key, the
//! SKESK v4 packet, the SEIPD v1 packet with its modification detection code (MDC), CFB mode,
//! parsing (including partial body lengths), decompression and MDC verification. We do not use
//! rpgp's high-level `MessageBuilder` for writing, because its only text mode (`'u'`) rejects
//! any line ending other than CR+LF, while pgcrypto's `pgp_sym_decrypt` (the text variant)
//! refuses a literal packet marked binary (`'b'`) with "Not text data". So we write the 6-byte
//! literal data packet header ourselves and hand it to rpgp's packet-level
//! `SymEncryptedProtectedData::encrypt_seipdv1`.
//!
//! # Parameters written
//!
//! - SKESK v4 with an encrypted random session key; cipher AES-256;
//! - S2K type 3 (iterated and salted), SHA-256, random 8-byte salt, count byte
//!   [`S2K_COUNT`] (`0xB0` = 2 MiB hashed per derivation). rpgp refuses to *write* SHA-1 S2K
//!   (RFC 9580 forbids it); pgcrypto reads SHA-256 S2K (checked by tests/crypto_pgcrypto.rs);
//! - SEIPD v1 (MDC), no compression;
//! - a literal data packet marked `'u'` (UTF-8 text) when the plaintext is valid UTF-8 without
//!   NUL bytes, else `'b'` (binary; only `pgp_sym_decrypt_bytea` reads those). The data is
//!   never rewritten (no CR/LF conversion); empty file name, zero timestamp.
//!
//! # Accepted on decryption
//!
//! Any SKESK v4 (with or without an encrypted session key) + SEIPD v1 message rpgp supports,
//! including pgcrypto's defaults (AES-128, S2K 3 with SHA-1, MDC) and its options
//! (`cipher-algo`, `compress-algo` zip/zlib, `s2k-mode`, `s2k-digest-algo`, `sess-key`).
//! Refused: messages without MDC (pgcrypto's `disable-mdc=1`, malleable), unencrypted messages,
//! armored text, anything but one literal data packet inside, and plaintexts over
//! [`MAX_PLAINTEXT`]. pgcrypto's `convert-crlf=1` is not undone: such plaintexts come back with
//! CR+LF line endings.
//!
//! # The key
//!
//! The key is the pgcrypto `psw` argument, so it must be valid UTF-8 text without NUL bytes,
//! and at least [`MIN_KEY_LEN`] bytes. PostgreSQL hashes the key in the server encoding: a key
//! with non-ASCII characters only matches when the database is UTF8. Error messages never
//! contain the key or any plaintext.

use std::fmt;
use std::io::Read;

use pgp::composed::{Edata, Message};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{PacketHeader, PacketTrait, SymEncryptedProtectedData, SymKeyEncryptedSessionKey};
use pgp::ser::Serialize;
use pgp::types::{Password, StringToKey, Tag};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::config::KeySource;
use crate::error::{Error, Result};

/// Shortest accepted key, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// Largest plaintext we encrypt or return from decryption (64 MiB).
pub const MAX_PLAINTEXT: usize = 64 << 20;

/// Cipher of the messages we write.
const CIPHER: SymmetricKeyAlgorithm = SymmetricKeyAlgorithm::AES256;

/// Hash of the iterated and salted S2K we write.
const S2K_HASH: HashAlgorithm = HashAlgorithm::Sha256;

/// OpenPGP coded S2K count: `(16 + (c & 15)) << ((c >> 4) + 6)` = 2 MiB of input hashed per key
/// derivation (pgcrypto's own default is a random count between 64 KiB and 248 KiB).
pub const S2K_COUNT: u8 = 0xB0;

/// The secret key that encrypts API-key secrets. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct SecretKey {
    key: Zeroizing<String>,
}

impl SecretKey {
    /// Load from the configured source. A file's content and a variable's value lose their
    /// trailing CR/LF characters. Source problems (missing or unreadable file, key file readable
    /// by group or others, unset or empty variable) are [`Error::Config`]; an unusable key
    /// (too short, not UTF-8, NUL bytes) is [`Error::Crypto`].
    pub fn load(source: &KeySource) -> Result<SecretKey> {
        match source {
            KeySource::File(path) => {
                let shown = path.display();
                let file = open_key_file(path)
                    .map_err(|e| Error::Config(format!("secret key file {shown}: cannot read it: {e}")))?;
                SecretKey::from_open_file(file, path).map_err(|e| in_source(e, source))
            }
            KeySource::Env(name) => {
                let value = match std::env::var_os(name) {
                    None => {
                        return Err(Error::Config(format!(
                            "secret key: environment variable {name} is not set"
                        )))
                    }
                    Some(v) => v,
                };
                let mut raw = Zeroizing::new(os_bytes(value));
                let len = trimmed_len(&raw);
                raw.truncate(len);
                if raw.is_empty() {
                    return Err(Error::Config(format!("secret key: environment variable {name} is empty")));
                }
                SecretKey::from_bytes(&raw).map_err(|e| in_source(e, source))
            }
        }
    }

    /// The key in the opened file `path`: every check is made on the open file (fstat), so the
    /// file checked is the file read, even if the path is replaced meanwhile.
    fn from_open_file(mut file: std::fs::File, path: &std::path::Path) -> Result<SecretKey> {
        let shown = path.display();
        let cannot =
            |e: std::io::Error| Error::Config(format!("secret key file {shown}: cannot read it: {e}"));
        let meta = file.metadata().map_err(cannot)?;
        if !meta.is_file() {
            return Err(Error::Config(format!("secret key file {shown}: not a regular file")));
        }
        check_private(path, &meta)?;
        let mut raw = Zeroizing::new(Vec::new());
        file.read_to_end(&mut raw).map_err(cannot)?;
        let len = trimmed_len(&raw);
        raw.truncate(len);
        if raw.is_empty() {
            return Err(Error::Config(format!("secret key file {shown} is empty")));
        }
        SecretKey::from_bytes(&raw)
    }

    /// A key from its bytes, taken as they are (nothing trimmed). It must be at least
    /// [`MIN_KEY_LEN`] bytes of UTF-8 text without NUL bytes, since SQL passes it as `text`.
    pub fn from_bytes(key: &[u8]) -> Result<SecretKey> {
        if key.is_empty() {
            return Err(Error::Crypto("the secret key is empty".into()));
        }
        if key.len() < MIN_KEY_LEN {
            return Err(Error::Crypto(format!("the secret key is shorter than {MIN_KEY_LEN} bytes")));
        }
        let text = std::str::from_utf8(key).map_err(|_| {
            Error::Crypto("the secret key is not valid UTF-8 (PostgreSQL's pgcrypto takes it as text)".into())
        })?;
        if text.contains('\0') {
            return Err(Error::Crypto(
                "the secret key contains a NUL byte (PostgreSQL text cannot hold it)".into(),
            ));
        }
        Ok(SecretKey { key: Zeroizing::new(text.to_owned()) })
    }

    /// The key as pgcrypto's `psw` argument: `pgp_sym_decrypt(secret_ciphertext, $1)`.
    /// Bind it as a query parameter; never interpolate it into SQL text or log it.
    pub fn expose_for_sql(&self) -> &str {
        &self.key
    }

    /// Encrypt `plaintext` into a binary OpenPGP message that pgcrypto can read.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(Error::Crypto(format!(
                "plaintext larger than {MAX_PLAINTEXT} bytes; refusing to encrypt it"
            )));
        }
        let session_key = CIPHER.new_session_key(OsRng);
        let s2k = StringToKey::new_iterated(OsRng, S2K_HASH, S2K_COUNT);
        let skesk = SymKeyEncryptedSessionKey::encrypt_v4(&self.password(), &session_key, s2k, CIPHER)
            .map_err(|_| Error::Crypto("encryption failed: cannot wrap the session key".into()))?;
        let literal = literal_packet(plaintext)?;
        let seipd = SymEncryptedProtectedData::encrypt_seipdv1(OsRng, CIPHER, session_key.as_ref(), &literal)
            .map_err(|_| Error::Crypto("encryption failed: cannot encrypt the data packet".into()))?;
        let mut out = Vec::with_capacity(plaintext.len() + 128);
        skesk
            .to_writer_with_header(&mut out)
            .and_then(|()| seipd.to_writer_with_header(&mut out))
            .map_err(|_| Error::Crypto("encryption failed: cannot serialize the message".into()))?;
        Ok(out)
    }

    /// Decrypt a binary OpenPGP symmetric message (ours or pgcrypto's `pgp_sym_encrypt`).
    /// A wrong key, damaged or tampered data, or an unsupported message is [`Error::Crypto`].
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        // rpgp is not expected to panic on hostile input, but a panic must never escape.
        match std::panic::catch_unwind(|| self.decrypt_inner(ciphertext)) {
            Ok(r) => r,
            Err(_) => Err(Error::Crypto("decryption failed: malformed ciphertext".into())),
        }
    }

    fn decrypt_inner(&self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        /// Said before any key is tried: the message is refused for what it is, whatever the key.
        const NO_INTEGRITY_CHECK: &str =
            "decryption refused: the ciphertext has no integrity check (an OpenPGP \
            Symmetrically Encrypted Data packet, without MDC, as pgcrypto's pgp_sym_encrypt writes with \
            'disable-mdc=1'), so a change to it could not be detected; encrypt the secret again without \
            disable-mdc (or put it again with api_keys.put)";
        const NOT_OURS: &str = "decryption failed: not a binary OpenPGP symmetric message";
        const WRONG_KEY: &str = "decryption failed: wrong key, or the ciphertext is damaged or tampered with";
        if ciphertext.is_empty() {
            return Err(Error::Crypto(format!("{NOT_OURS} (empty input)")));
        }
        let msg = Message::from_bytes(ciphertext).map_err(|_| Error::Crypto(NOT_OURS.into()))?;
        if !msg.is_encrypted() {
            return Err(Error::Crypto(format!("{NOT_OURS} (it is not encrypted)")));
        }
        if let Message::Encrypted { edata: Edata::SymEncryptedData { .. }, .. } = &msg {
            return Err(Error::Crypto(NO_INTEGRITY_CHECK.into()));
        }
        let mut msg =
            msg.decrypt_with_password(&self.password()).map_err(|_| Error::Crypto(WRONG_KEY.into()))?;
        if msg.is_compressed() {
            msg = msg.decompress().map_err(|_| Error::Crypto(WRONG_KEY.into()))?;
        }
        if !msg.is_literal() {
            return Err(Error::Crypto(
                "decryption failed: the message holds something other than literal data".into(),
            ));
        }
        // Read to the very end: the MDC is only checked once all data went through.
        let mut out = Vec::new();
        let read = (&mut msg).take(MAX_PLAINTEXT as u64 + 1).read_to_end(&mut out);
        if read.is_err() {
            out.zeroize();
            return Err(Error::Crypto(WRONG_KEY.into()));
        }
        if out.len() > MAX_PLAINTEXT {
            out.zeroize();
            return Err(Error::Crypto(format!(
                "decryption failed: plaintext larger than {MAX_PLAINTEXT} bytes"
            )));
        }
        Ok(out)
    }

    /// A short non-secret fingerprint: the first 8 hex digits of SHA-256 of the key.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.key.as_bytes());
        hex::encode(&digest[..4])
    }

    fn password(&self) -> Password {
        Password::from(self.key.as_str())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(fingerprint {})", self.fingerprint())
    }
}

/// The serialized literal data packet (tag 11) around `plaintext`: mode `'u'` for NUL-free
/// UTF-8 (what `pgp_sym_decrypt` requires), else `'b'`; empty file name; zero date.
fn literal_packet(plaintext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let is_text = !plaintext.contains(&0) && std::str::from_utf8(plaintext).is_ok();
    let mode = if is_text { b'u' } else { b'b' };
    let body_len =
        u32::try_from(plaintext.len() + 6).map_err(|_| Error::Crypto("plaintext too large".into()))?;
    let header = PacketHeader::new_fixed(Tag::LiteralData, body_len);
    let mut out = Zeroizing::new(Vec::with_capacity(header.write_len() + plaintext.len() + 6));
    header
        .to_writer(&mut *out)
        .map_err(|_| Error::Crypto("encryption failed: cannot write the literal header".into()))?;
    out.extend_from_slice(&[mode, 0, 0, 0, 0, 0]);
    out.extend_from_slice(plaintext);
    Ok(out)
}

/// Length of `raw` without its trailing CR and LF characters.
fn trimmed_len(raw: &[u8]) -> usize {
    raw.iter().rposition(|b| *b != b'\n' && *b != b'\r').map_or(0, |i| i + 1)
}

#[cfg(unix)]
fn os_bytes(v: std::ffi::OsString) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    v.into_vec()
}

#[cfg(not(unix))]
fn os_bytes(v: std::ffi::OsString) -> Vec<u8> {
    // Not valid Unicode: keep a non-UTF-8 marker so from_bytes refuses it.
    v.into_string().map(String::into_bytes).unwrap_or_else(|_| vec![0xff; MIN_KEY_LEN])
}

/// Open the key file for reading without blocking on a FIFO (which the regular-file check then
/// refuses); a symbolic link is followed (mounted secrets are often links).
#[cfg(unix)]
fn open_key_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)
}

#[cfg(not(unix))]
fn open_key_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

/// The key file may be read and changed by its owner only (mode 0600 or stricter), and its owner
/// is this process's user or root: another owner could change the key, or its mode, at will.
#[cfg(unix)]
fn check_private(path: &std::path::Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "secret key file {} is accessible by group or others (mode {mode:03o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(Error::Config(format!(
            "secret key file {} belongs to uid {}, neither this process's user (uid {me}) nor root: its owner \
             can change the key and its mode; run `chown {me} {}`",
            path.display(),
            meta.uid(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &std::path::Path, _meta: &std::fs::Metadata) -> Result<()> {
    Ok(())
}

/// Name the key's source in a key-content error.
fn in_source(e: Error, source: &KeySource) -> Error {
    match e {
        Error::Crypto(m) => Error::Crypto(format!("{m} (from {source:?})")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const KEY: &str = "correct horse battery staple 42";

    fn key() -> SecretKey {
        SecretKey::from_bytes(KEY.as_bytes()).unwrap()
    }

    fn assert_crypto_err(r: Result<Vec<u8>>) {
        match r {
            Err(Error::Crypto(m)) => {
                assert!(!m.contains(KEY), "message leaks the key: {m}");
            }
            Err(e) => panic!("expected Error::Crypto, got {e:?}"),
            Ok(_) => panic!("expected Error::Crypto, got Ok"),
        }
    }

    fn key_file(content: &[u8], mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, content).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        (dir, path)
    }

    #[test]
    fn round_trip() {
        let k = key();
        for plain in [
            &b"sk_live_0123456789abcdef"[..],
            "naïve ключ 秘密 🔑\nline two\r\n".as_bytes(),
            b"",
            &[0u8, 1, 2, 0xff, 0xfe][..],
            &vec![b'x'; 70_000][..],
        ] {
            let ct = k.encrypt(plain).unwrap();
            assert_eq!(k.decrypt(&ct).unwrap(), plain);
        }
    }

    #[test]
    fn ciphertext_format_and_randomness() {
        let k = key();
        let a = k.encrypt(b"same secret").unwrap();
        let b = k.encrypt(b"same secret").unwrap();
        assert_ne!(a, b, "random salt and session key");
        // New-format SKESK (tag 3), version 4, AES-256 (9), S2K type 3, SHA-256 (8), salt, count.
        assert_eq!(a[0], 0xC3);
        assert_eq!(&a[2..6], &[4, 9, 3, 8]);
        assert_eq!(a[14], S2K_COUNT);
        // Plaintext does not appear in the ciphertext.
        assert!(!a.windows(11).any(|w| w == b"same secret"));
    }

    #[test]
    fn wrong_key_fails_with_crypto_error() {
        let ct = key().encrypt(b"top secret value").unwrap();
        let other = SecretKey::from_bytes(b"another key, 16+ bytes long").unwrap();
        assert_crypto_err(other.decrypt(&ct));
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let k = key();
        let ct = k.encrypt(b"top secret value, long enough to span blocks").unwrap();
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            if let Ok(p) = k.decrypt(&bad) {
                panic!("flipping byte {i} still decrypted ({} bytes)", p.len());
            }
        }
        // Truncated, extended and garbage inputs.
        for n in [0, 1, 10, ct.len() / 2, ct.len() - 1] {
            assert_crypto_err(k.decrypt(&ct[..n]));
        }
        assert_crypto_err(k.decrypt(b"not an openpgp message at all"));
    }

    #[test]
    fn unencrypted_message_refused() {
        // A bare literal data packet is a valid OpenPGP message, but not an encrypted one.
        let lit = literal_packet(b"plain").unwrap();
        assert_crypto_err(key().decrypt(&lit));
    }

    #[test]
    fn empty_and_short_keys_refused() {
        assert!(matches!(SecretKey::from_bytes(b""), Err(Error::Crypto(_))));
        assert!(matches!(SecretKey::from_bytes(b"short key"), Err(Error::Crypto(_))));
        assert!(matches!(SecretKey::from_bytes(&[0xff; 20]), Err(Error::Crypto(_))));
        assert!(matches!(SecretKey::from_bytes(b"sixteen\0bytes..."), Err(Error::Crypto(_))));
        assert!(SecretKey::from_bytes(b"exactly 16 bytes").is_ok());
    }

    #[test]
    fn load_from_file() {
        let (_d, path) = key_file(format!("{KEY}\n").as_bytes(), 0o600);
        let k = SecretKey::load(&KeySource::File(path)).unwrap();
        assert_eq!(k.expose_for_sql(), KEY);
    }

    #[test]
    fn key_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = SecretKey::load(&KeySource::File(dir.path().join("nope")));
        assert!(matches!(missing, Err(Error::Config(_))), "{missing:?}");

        let (_d, empty) = key_file(b"\n", 0o600);
        let e = SecretKey::load(&KeySource::File(empty)).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");

        let (_d, short) = key_file(b"tiny\n", 0o600);
        let e = SecretKey::load(&KeySource::File(short)).unwrap_err();
        assert!(matches!(e, Error::Crypto(_)), "{e:?}");
        assert!(!e.to_string().contains("tiny"));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_permissions_checked() {
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let (_d, path) = key_file(KEY.as_bytes(), mode);
            let e = SecretKey::load(&KeySource::File(path)).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, Error::Config(_)), "{e:?}");
            assert!(msg.contains("chmod 600"), "{msg}");
            assert!(!msg.contains(KEY));
        }
        let (_d, path) = key_file(KEY.as_bytes(), 0o400);
        assert!(SecretKey::load(&KeySource::File(path)).is_ok());
    }

    /// Regression (issue 14, item 9): the owner of the key file was not checked. A file another
    /// user owns is refused (that user could change the key, or its mode, at will). Needs root to
    /// give the file away, as `scripts/test` runs.
    #[cfg(unix)]
    #[test]
    fn a_key_file_owned_by_another_user_is_refused() {
        let (_d, path) = key_file(KEY.as_bytes(), 0o600);
        assert!(SecretKey::load(&KeySource::File(path.clone())).is_ok(), "owned by this process's user");
        if let Err(e) = std::os::unix::fs::chown(&path, Some(4242), None) {
            panic!(
                "cannot give the key file to uid 4242 ({e}): this test needs root, as `scripts/test` runs it"
            );
        }
        let e = SecretKey::load(&KeySource::File(path)).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("uid 4242") && msg.contains("chown"), "{msg}");
        assert!(!msg.contains(KEY));
    }

    /// Regression (issue 14, item 9): the mode was checked on the path and the key read in a
    /// second step, so a path replaced in between was read unchecked. Now both are made on one open
    /// file: here the path is replaced by a world-readable file with another key after opening,
    /// and the key read is the one of the file that was checked.
    #[cfg(unix)]
    #[test]
    fn the_file_checked_is_the_file_read() {
        let (dir, path) = key_file(KEY.as_bytes(), 0o600);
        let opened = open_key_file(&path).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, "another-key-that-everyone-can-read").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let k = SecretKey::from_open_file(opened, &path).unwrap();
        assert_eq!(k.expose_for_sql(), KEY);
        // A FIFO is refused, not waited on.
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let e = SecretKey::load(&KeySource::File(fifo)).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn load_from_env() {
        // Variable names unique to this test: tests run in parallel threads.
        let name = "DUALWRITE_TEST_CRYPTO_KEY_5d1c";
        std::env::set_var(name, KEY);
        let k = SecretKey::load(&KeySource::Env(name.into())).unwrap();
        assert_eq!(k.expose_for_sql(), KEY);

        let empty = "DUALWRITE_TEST_CRYPTO_EMPTY_5d1c";
        std::env::set_var(empty, "");
        let e = SecretKey::load(&KeySource::Env(empty.into())).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");

        let unset = "DUALWRITE_TEST_CRYPTO_UNSET_5d1c";
        std::env::remove_var(unset);
        let e = SecretKey::load(&KeySource::Env(unset.into())).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(e.to_string().contains(unset));
    }

    #[test]
    fn debug_and_fingerprint_do_not_print_the_key() {
        let k = key();
        let shown = format!("{k:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.starts_with("SecretKey(fingerprint "), "{shown}");
        let fp = k.fingerprint();
        assert_eq!(fp.len(), 8);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(fp, hex::encode(&Sha256::digest(KEY.as_bytes())[..4]));
        assert!(shown.contains(&fp));
    }
}
