//! Client-side envelope encryption (`[encryption]`): the encrypted frame format, sealed
//! blobs and key records.
//!
//! Why it lives in `manifest`: like the codec, the encrypted formats are part of what is
//! stored and must be readable by another implementation from `docs/formats.md` alone;
//! the pack writer and readers (`pack`), the manifest and segment codecs and the verifier
//! all use them, and they all sit above `manifest`.
//!
//! The scheme:
//!
//! - A pipeline has one random 256-bit **data key** (AES-256-GCM), created by its first
//!   encrypted backup and stored *wrapped* in a key record `keys/<key-id>.json`. The key
//!   record is the one blob `blobpipe key rotate` rewrites: it wraps the same data key
//!   under another key-encryption key (KEK), so no pack, segment or manifest changes.
//! - The KEK comes from a key file, an environment variable, or a passphrase stretched by
//!   argon2id (parameters and salt in the key record). Its fingerprint (`kek.id`) is in the
//!   key record and the manifest header, so a wrong key is told apart from a damaged record
//!   ([`ErrorKind::WrongKey`] vs `Integrity`) before anything is read or written with it.
//! - Or the KEK is an RSA key in Azure Key Vault that never leaves it
//!   (`store::azure::key_vault`): the vault wraps the data key with RSA-OAEP-256, and the
//!   record keeps the exact key version that wrapped (so a new current version does not
//!   strand it) and a check value of the data key (HMAC under the data key), because an
//!   RSA ciphertext carries no fingerprint of the key that made it.
//! - Every compressed frame of a pack is sealed on its own ([`DataKey::seal_frame`]) with
//!   the pack id, the frame index and a last-frame flag as associated data: a frame moved
//!   to another pack or position, or a pack cut short at a frame boundary, fails its tag.
//! - Manifest bodies, segments, part records and plans are sealed whole
//!   ([`DataKey::seal_blob`]) with their blob name (relative to the prefix) as associated
//!   data, so one cannot stand in for another.
//!
//! Nonces are synthetic: the first 96 bits of HMAC-SHA256 under a key derived from the data
//! key, over the associated data and the plaintext. The same frame or blob sealed again
//! (a resumed run re-writing a pack, an unchanged segment) gives the same bytes, so
//! create-only puts stay idempotent and staged blocks are found again; different
//! plaintexts get independent nonces (a collision is as likely as for random ones, and
//! the usual bound of 2³² messages per GCM key is 4 PiB of 1 MiB frames).

use std::io::Read;
use std::path::PathBuf;

use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};
use crate::store::azure::key_vault::{self, KeyVaultKey};
use crate::support::secret::Secret;

/// Bytes of a data key or KEK.
pub const KEY_LEN: usize = 32;
/// Bytes of a GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed frame adds to its compressed frame: length (4), nonce (12), tag (16).
pub const FRAME_OVERHEAD: usize = 4 + NONCE_LEN + TAG_LEN;
/// The AEAD, as manifests and key records name it.
pub const ALG: &str = "aes-256-gcm";
/// Magic of a sealed blob.
pub const BLOB_MAGIC: &[u8; 4] = b"BPE1";

const FRAME_AD: &[u8] = b"blobpipe frame 1\0";
const BLOB_AD: &[u8] = b"blobpipe blob 1\0";
const KEY_AD: &[u8] = b"blobpipe key 1\0";
const KEK_ID: &[u8] = b"blobpipe kek 1\0";
const NONCE_KEY: &[u8] = b"blobpipe nonce 1\0";
const CHECK_AD: &[u8] = b"blobpipe key check 1\0";

/// Default argon2id cost for a passphrase: 64 MiB, 3 passes, 1 lane.
pub const ARGON2_M_KIB: u32 = 64 * 1024;
/// Default argon2id passes.
pub const ARGON2_T: u32 = 3;
/// Default argon2id lanes.
pub const ARGON2_P: u32 = 1;

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::internal("the system random generator failed"))?;
    Ok(b)
}

fn aes_key(raw: &[u8; KEY_LEN]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, raw)
        .map(LessSafeKey::new)
        .map_err(|_| Error::internal("AES-256-GCM refused a 32-byte key"))
}

/// Seal `plain` into `nonce || ciphertext || tag` appended to `out`.
fn seal_into(
    key: &LessSafeKey,
    nonce: [u8; NONCE_LEN],
    ad: &[u8],
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plain);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(ad),
            &mut out[start..],
        )
        .map_err(|_| Error::internal("AES-256-GCM sealing failed"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// Open `nonce || ciphertext || tag`; `None` when the tag does not match.
fn open(key: &LessSafeKey, ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).ok()?;
    let mut buf = sealed[NONCE_LEN..].to_vec();
    let n = key
        .open_in_place(nonce, Aad::from(ad), &mut buf)
        .ok()?
        .len();
    buf.truncate(n);
    Some(buf)
}

/// A pipeline's data key. `Debug` shows its id only.
pub struct DataKey {
    id: String,
    key: LessSafeKey,
    /// Keyed HMAC state for synthetic nonces (keyed by HMAC(data key, [`NONCE_KEY`])).
    nonces: Hmac<Sha256>,
    raw: Zeroizing<[u8; KEY_LEN]>,
    /// The KEK that wraps it (once wrapped or unwrapped).
    kek: Option<KekRef>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({}, ***)", self.id)
    }
}

/// Associated data of frame `index` of pack `pack_id`.
fn frame_ad(pack_id: &str, index: u64, last: bool) -> Vec<u8> {
    let mut ad = Vec::with_capacity(FRAME_AD.len() + pack_id.len() + 9);
    ad.extend_from_slice(FRAME_AD);
    ad.extend_from_slice(pack_id.as_bytes());
    ad.extend_from_slice(&index.to_be_bytes());
    ad.push(u8::from(last));
    ad
}

impl DataKey {
    /// A new random data key with a random id.
    ///
    /// # Errors
    /// `Internal` if the system random generator fails.
    pub fn generate() -> Result<DataKey> {
        let raw = Zeroizing::new(random::<KEY_LEN>()?);
        let id = hex::encode(random::<8>()?);
        DataKey::from_raw(id, raw)
    }

    fn from_raw(id: String, raw: Zeroizing<[u8; KEY_LEN]>) -> Result<DataKey> {
        let derive = |k: &[u8]| {
            <Hmac<Sha256> as Mac>::new_from_slice(k)
                .map_err(|_| Error::internal("HMAC refused a key"))
        };
        let mut d = derive(&raw[..])?;
        d.update(NONCE_KEY);
        let mut nonce_key = Zeroizing::new([0u8; 32]);
        nonce_key.copy_from_slice(&d.finalize().into_bytes());
        Ok(DataKey {
            id,
            key: aes_key(&raw)?,
            nonces: derive(&nonce_key[..])?,
            raw,
            kek: None,
        })
    }

    /// The same key, recorded as wrapped by `kek`.
    pub fn wrapped_by(mut self, kek: KekRef) -> DataKey {
        self.kek = Some(kek);
        self
    }

    /// What a manifest header records about this key.
    pub fn info(&self) -> Option<EncryptionInfo> {
        Some(EncryptionInfo {
            alg: ALG.into(),
            key: self.id.clone(),
            kek: self.kek.clone()?,
        })
    }

    /// The synthetic nonce of `plain` under associated data `ad`.
    fn nonce(&self, ad: &[u8], plain: &[u8]) -> [u8; NONCE_LEN] {
        let mut m = self.nonces.clone();
        m.update(&(ad.len() as u64).to_be_bytes());
        m.update(ad);
        m.update(plain);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&m.finalize().into_bytes()[..NONCE_LEN]);
        n
    }

    /// The key's id (16 hex digits; names its key record).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seal compressed frame `index` of pack `pack_id` and append it to `out` as
    /// `len (u32 LE) || nonce (12) || ciphertext || tag (16)`, `len` counting the
    /// ciphertext and tag. `last`: this is the pack's final frame.
    ///
    /// # Errors
    /// `Internal` if the frame exceeds 4 GiB.
    pub fn seal_frame(
        &self,
        pack_id: &str,
        index: u64,
        last: bool,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let len = u32::try_from(plain.len() + TAG_LEN)
            .map_err(|_| Error::internal("a frame larger than 4 GiB cannot be sealed"))?;
        out.extend_from_slice(&len.to_le_bytes());
        let ad = frame_ad(pack_id, index, last);
        seal_into(&self.key, self.nonce(&ad, plain), &ad, plain, out)
    }

    /// Open one sealed frame (exactly its bytes, as the frame table cuts them).
    ///
    /// # Errors
    /// `Integrity` when the length field disagrees with the bytes or the tag does not
    /// match: the frame was altered, truncated, moved from another pack or position, or
    /// sealed with another key.
    pub fn open_frame(
        &self,
        pack_id: &str,
        index: u64,
        last: bool,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let bad = |why: &str| Error::integrity(format!("pack {pack_id} frame {index}: {why}"));
        if sealed.len() < FRAME_OVERHEAD {
            return Err(bad(&format!(
                "{} bytes is shorter than a sealed frame's {FRAME_OVERHEAD}-byte overhead",
                sealed.len()
            )));
        }
        let len = u32::from_le_bytes([sealed[0], sealed[1], sealed[2], sealed[3]]) as usize;
        if 4 + NONCE_LEN + len != sealed.len() {
            return Err(bad(&format!(
                "its length field says {} bytes, the frame holds {}",
                4 + NONCE_LEN + len,
                sealed.len()
            )));
        }
        open(&self.key, &frame_ad(pack_id, index, last), &sealed[4..]).ok_or_else(|| {
            bad("authentication tag does not match (the ciphertext was altered, truncated, or moved from another pack or position)")
        })
    }

    /// Seal a whole blob stored as `name` (relative to the prefix): `BPE1 || key id (16
    /// ASCII hex) || nonce (12) || ciphertext || tag (16)`.
    ///
    /// # Errors
    /// `Internal` if the AEAD fails (never for valid input).
    pub fn seal_blob(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plain.len() + 4 + self.id.len() + NONCE_LEN + TAG_LEN);
        out.extend_from_slice(BLOB_MAGIC);
        out.extend_from_slice(self.id.as_bytes());
        let ad = blob_ad(&self.id, name);
        seal_into(&self.key, self.nonce(&ad, plain), &ad, plain, &mut out)?;
        Ok(out)
    }

    /// Open a sealed blob stored as `name`.
    ///
    /// # Errors
    /// `Integrity` when it is not a sealed blob, names another data key, or its tag does
    /// not match (altered, truncated or renamed).
    pub fn open_blob(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let head = 4 + self.id.len();
        if sealed.len() < head || &sealed[..4] != BLOB_MAGIC {
            return Err(Error::integrity(format!(
                "{name}: not an encrypted blob (the pipeline is encrypted; this blob was not written under [encryption])"
            )));
        }
        if &sealed[4..head] != self.id.as_bytes() {
            return Err(Error::integrity(format!(
                "{name}: sealed under data key {:?}, the pipeline's is {}",
                String::from_utf8_lossy(&sealed[4..head]),
                self.id
            )));
        }
        open(&self.key, &blob_ad(&self.id, name), &sealed[head..]).ok_or_else(|| {
            Error::integrity(format!(
                "{name}: authentication tag does not match (the blob was altered, truncated or renamed)"
            ))
        })
    }

    /// Read sealed frames from `r` (a whole pack, from its start) and hand each opened
    /// (still compressed) frame to `sink`, in order. Needs no frame table: each frame
    /// carries its length, and the last one is found by reaching the end.
    ///
    /// # Errors
    /// `Integrity` for a damaged, reordered or truncated pack; I/O errors of `r`; what
    /// `sink` returns.
    pub fn open_frames(
        &self,
        pack_id: &str,
        mut r: impl Read,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let io =
            |e: std::io::Error| Error::io(ErrorKind::Store, format!("reading pack {pack_id}"), e);
        let mut len = [0u8; 4];
        let mut have = read_full(&mut r, &mut len).map_err(io)?;
        if have == 0 {
            return Ok(());
        }
        let mut index = 0u64;
        loop {
            if have < 4 {
                return Err(Error::integrity(format!(
                    "pack {pack_id} frame {index}: the pack ends inside a frame's length field"
                )));
            }
            let n = u32::from_le_bytes(len) as usize;
            let mut frame = Vec::with_capacity(4 + NONCE_LEN + n);
            frame.extend_from_slice(&len);
            let got = (&mut r)
                .take((NONCE_LEN + n) as u64)
                .read_to_end(&mut frame)
                .map_err(io)?;
            if got != NONCE_LEN + n {
                return Err(Error::integrity(format!(
                    "pack {pack_id} frame {index}: the pack ends after {got} of the frame's {} bytes",
                    NONCE_LEN + n
                )));
            }
            have = read_full(&mut r, &mut len).map_err(io)?;
            let last = have == 0;
            sink(&self.open_frame(pack_id, index, last, &frame)?)?;
            if last {
                return Ok(());
            }
            index += 1;
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn blob_ad(key_id: &str, name: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(BLOB_AD.len() + key_id.len() + name.len());
    ad.extend_from_slice(BLOB_AD);
    ad.extend_from_slice(key_id.as_bytes());
    ad.extend_from_slice(name.as_bytes());
    ad
}

/// What kind of key-encryption key wraps a data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KekKind {
    /// 32 bytes (hex or base64) in a file.
    KeyFile,
    /// 32 bytes (hex or base64) in an environment variable.
    KeyEnv,
    /// A passphrase stretched by argon2id.
    Passphrase,
    /// An RSA key in Azure Key Vault (RSA-OAEP-256 wrap).
    KeyVault,
}

impl KekKind {
    /// The name used in records and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            KekKind::KeyFile => "key-file",
            KekKind::KeyEnv => "key-env",
            KekKind::Passphrase => "passphrase",
            KekKind::KeyVault => "key-vault",
        }
    }
}

/// The KEK a record or manifest names: its kind and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekRef {
    /// Kind.
    pub kind: KekKind,
    /// First 8 bytes, hex, of SHA-256(`"blobpipe kek 1\0"` || KEK); for a Key Vault key,
    /// of SHA-256(`"blobpipe kek 1\0"` || its identifier without version).
    pub id: String,
}

/// argon2id parameters and salt of a passphrase KEK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    /// Always `argon2id` (version 0x13).
    pub alg: String,
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
    /// Salt (base64, 16 bytes).
    pub salt: String,
}

/// Where the KEK comes from: the checked `[encryption]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSource {
    /// `key_file`: a file holding 32 bytes as 64 hex digits or base64.
    KeyFile(PathBuf),
    /// `key_env`: an environment variable holding them.
    KeyEnv(String),
    /// `passphrase_env`: an environment variable holding a passphrase.
    PassphraseEnv(String),
    /// `passphrase_file`: a file holding a passphrase (one line).
    PassphraseFile(PathBuf),
    /// `key_vault_key`: an RSA key in Azure Key Vault.
    KeyVault(KeyVaultKey),
}

/// The checked `[encryption]` table of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionConfig {
    /// Where the key-encryption key comes from.
    pub kek: KekSource,
}

/// A resolved key-encryption key. `Debug` shows its kind and fingerprint only.
pub struct Kek {
    /// Kind and fingerprint.
    pub r: KekRef,
    key: LessSafeKey,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({} {}, ***)", self.r.kind.as_str(), self.r.id)
    }
}

fn parse_key(text: &str, what: &str) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let t = text.trim();
    let bytes = Zeroizing::new(
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).unwrap_or_default()
        } else {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .unwrap_or_default()
        },
    );
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return Err(Error::config(format!(
            "{what} does not hold a 256-bit key: expected 64 hex digits or the base64 of 32 bytes (make one with `openssl rand -hex 32`)"
        )));
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

fn read_secret_file(path: &PathBuf, what: &str) -> Result<Secret> {
    std::fs::read_to_string(path).map(Secret::new).map_err(|e| {
        Error::config(format!(
            "{what} {}: {e}; the pipeline's [encryption] names it: create it or fix the path",
            path.display()
        ))
    })
}

fn read_secret_env(var: &str, what: &str) -> Result<Secret> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v)),
        _ => Err(Error::config(format!(
            "{what}: environment variable {var} is not set (the pipeline's [encryption] names it); set it to the key"
        ))),
    }
}

fn kek_from(kind: KekKind, raw: &[u8; KEY_LEN]) -> Result<Kek> {
    let mut h = Sha256::new();
    h.update(KEK_ID);
    h.update(raw);
    Ok(Kek {
        r: KekRef {
            kind,
            id: hex::encode(&h.finalize()[..8]),
        },
        key: aes_key(raw)?,
    })
}

impl KekSource {
    /// The KEK kind this source gives.
    pub fn kind(&self) -> KekKind {
        match self {
            KekSource::KeyFile(_) => KekKind::KeyFile,
            KekSource::KeyEnv(_) => KekKind::KeyEnv,
            KekSource::PassphraseEnv(_) | KekSource::PassphraseFile(_) => KekKind::Passphrase,
            KekSource::KeyVault(_) => KekKind::KeyVault,
        }
    }

    /// A fresh KDF (random salt, default cost) for a passphrase source, `None` otherwise.
    ///
    /// # Errors
    /// `Internal` if the random generator fails.
    pub fn new_kdf(&self) -> Result<Option<Kdf>> {
        if self.kind() != KekKind::Passphrase {
            return Ok(None);
        }
        Ok(Some(Kdf {
            alg: "argon2id".into(),
            m_kib: ARGON2_M_KIB,
            t: ARGON2_T,
            p: ARGON2_P,
            salt: crate::store::b64(&random::<16>()?),
        }))
    }

    /// Check that the key can be had before anything is written: read it (a passphrase
    /// with a throwaway salt), or for a Key Vault key find the token credential that will
    /// ask the vault (no network call).
    ///
    /// # Errors
    /// As [`KekSource::resolve`]; `Config` when no Entra ID token credential is available.
    pub fn preflight(&self) -> Result<()> {
        match self {
            KekSource::KeyVault(k) => key_vault::preflight(k),
            _ => self.resolve(self.new_kdf()?.as_ref()).map(drop),
        }
    }

    /// Read the key (or derive it from the passphrase with `kdf`).
    ///
    /// # Errors
    /// `Config` when the file or variable is missing or does not hold a key, or a
    /// passphrase source has no KDF parameters; `Integrity` for unusable parameters.
    pub fn resolve(&self, kdf: Option<&Kdf>) -> Result<Kek> {
        match self {
            KekSource::KeyFile(p) => {
                let s = read_secret_file(p, "encryption key file")?;
                let raw = parse_key(s.expose(), &format!("key file {}", p.display()))?;
                kek_from(KekKind::KeyFile, &raw)
            }
            KekSource::KeyEnv(v) => {
                let s = read_secret_env(v, "encryption key")?;
                let raw = parse_key(s.expose(), &format!("environment variable {v}"))?;
                kek_from(KekKind::KeyEnv, &raw)
            }
            KekSource::PassphraseEnv(_) | KekSource::PassphraseFile(_) => {
                let pass = match self {
                    KekSource::PassphraseEnv(v) => read_secret_env(v, "passphrase")?,
                    KekSource::PassphraseFile(p) => read_secret_file(p, "passphrase file")?,
                    _ => unreachable!("matched above"),
                };
                let kdf = kdf.ok_or_else(|| {
                    Error::config("a passphrase needs the key record's argon2id parameters")
                })?;
                let raw = derive(pass.expose().trim_end_matches(['\n', '\r']), kdf)?;
                kek_from(KekKind::Passphrase, &raw)
            }
            KekSource::KeyVault(k) => Err(Error::internal(format!(
                "the Key Vault key {k} wraps in the vault; it has no local key to resolve"
            ))),
        }
    }
}

fn derive(pass: &str, kdf: &Kdf) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    if kdf.alg != "argon2id" {
        return Err(Error::integrity(format!(
            "key record: KDF {:?} is not argon2id",
            kdf.alg
        )));
    }
    let salt = crate::store::b64_decode(&kdf.salt)
        .ok_or_else(|| Error::integrity("key record: the argon2id salt is not base64"))?;
    // Bounds keep a forged record from asking for absurd memory or time.
    if !(8..=4 << 20).contains(&kdf.m_kib)
        || !(1..=64).contains(&kdf.t)
        || !(1..=16).contains(&kdf.p)
    {
        return Err(Error::integrity(format!(
            "key record: argon2id parameters m={} KiB t={} p={} are outside 8 KiB..4 GiB, 1..64 passes, 1..16 lanes",
            kdf.m_kib, kdf.t, kdf.p
        )));
    }
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(KEY_LEN))
        .map_err(|e| Error::integrity(format!("key record: argon2id parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    a.hash_password_into(pass.as_bytes(), &salt, &mut out[..])
        .map_err(|e| Error::integrity(format!("key record: argon2id: {e}")))?;
    Ok(out)
}

/// A key record, `keys/<key-id>.json`: the data key wrapped by a KEK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Always `key`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Record format (1).
    pub format: u32,
    /// Data key id.
    pub id: String,
    /// AEAD of the data key ([`ALG`]).
    pub alg: String,
    /// When the data key was made.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it was last re-wrapped (`key rotate`).
    #[serde(default)]
    pub rotated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The wrapping KEK.
    pub kek: KekRef,
    /// argon2id parameters (passphrase KEKs only).
    #[serde(default)]
    pub kdf: Option<Kdf>,
    /// base64 of `nonce || AES-256-GCM(KEK, data key, ad = "blobpipe key 1\0" || id) || tag`;
    /// for a Key Vault KEK, of the vault's RSA-OAEP-256 ciphertext of the data key.
    pub wrapped: String,
    /// Key Vault KEKs only: the key version that wrapped and the data key's check value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault: Option<VaultWrap>,
}

/// What a key record keeps about a Key Vault wrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultWrap {
    /// The key identifier, with the version that wrapped (unwrap asks for that version).
    pub key: String,
    /// The wrap algorithm (`RSA-OAEP-256`).
    pub alg: String,
    /// First 8 bytes, hex, of HMAC-SHA256(data key, `"blobpipe key check 1\0"` || id): tells
    /// that the vault gave back this record's data key.
    pub check: String,
}

/// The KEK reference of a Key Vault key (any version).
fn vault_ref(k: &KeyVaultKey) -> KekRef {
    let mut h = Sha256::new();
    h.update(KEK_ID);
    h.update(k.unversioned().to_ascii_lowercase().as_bytes());
    KekRef {
        kind: KekKind::KeyVault,
        id: hex::encode(&h.finalize()[..8]),
    }
}

/// The check value of data key `raw` with id `id` ([`VaultWrap::check`]).
fn check_value(raw: &[u8], id: &str) -> Result<String> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(raw)
        .map_err(|_| Error::internal("HMAC refused a key"))?;
    m.update(CHECK_AD);
    m.update(id.as_bytes());
    Ok(hex::encode(&m.finalize().into_bytes()[..8]))
}

impl KeyRecord {
    /// Wrap `dk` under the KEK `source` gives (a fresh salt for a passphrase).
    ///
    /// # Errors
    /// As [`KekSource::resolve`].
    pub async fn wrap(dk: &DataKey, source: &KekSource) -> Result<KeyRecord> {
        if let KekSource::KeyVault(k) = source {
            let w = key_vault::wrap(k, &dk.raw[..]).await?;
            return Ok(KeyRecord {
                kind: "key".into(),
                format: 1,
                id: dk.id.clone(),
                alg: ALG.into(),
                created_at: chrono::Utc::now(),
                rotated_at: None,
                kek: vault_ref(k),
                kdf: None,
                wrapped: crate::store::b64(&w.value),
                key_vault: Some(VaultWrap {
                    key: w.key.id(),
                    alg: key_vault::ALG.into(),
                    check: check_value(&dk.raw[..], &dk.id)?,
                }),
            });
        }
        let kdf = source.new_kdf()?;
        let kek = source.resolve(kdf.as_ref())?;
        let mut ad = KEY_AD.to_vec();
        ad.extend_from_slice(dk.id.as_bytes());
        let mut wrapped = Vec::new();
        seal_into(
            &kek.key,
            random::<NONCE_LEN>()?,
            &ad,
            &dk.raw[..],
            &mut wrapped,
        )?;
        Ok(KeyRecord {
            kind: "key".into(),
            format: 1,
            id: dk.id.clone(),
            alg: ALG.into(),
            created_at: chrono::Utc::now(),
            rotated_at: None,
            kek: kek.r,
            kdf,
            wrapped: crate::store::b64(&wrapped),
            key_vault: None,
        })
    }

    /// Unwrap the data key with the KEK `source` gives.
    ///
    /// # Errors
    /// `WrongKey` when the KEK's kind or fingerprint is not the record's; `Integrity`
    /// when the record is malformed or its tag does not match; `Config` as
    /// [`KekSource::resolve`].
    pub async fn unwrap(&self, source: &KekSource) -> Result<DataKey> {
        if self.kind != "key" || self.format != 1 || self.alg != ALG {
            return Err(Error::integrity(format!(
                "key record {}: type {:?}, format {}, alg {:?}: this blobpipe reads type \"key\", format 1, {ALG}",
                self.id, self.kind, self.format, self.alg
            )));
        }
        if !(self.id.len() == 16 && self.id.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(Error::integrity(format!(
                "key record: id {:?} is not 16 hex digits",
                self.id
            )));
        }
        if source.kind() != self.kek.kind {
            return Err(Error::new(
                ErrorKind::WrongKey,
                format!(
                    "data key {} is wrapped by a {} key (fingerprint {}); the pipeline gives a {}",
                    self.id,
                    self.kek.kind.as_str(),
                    self.kek.id,
                    source.kind().as_str()
                ),
            ));
        }
        if let KekSource::KeyVault(k) = source {
            return self.unwrap_vault(k).await;
        }
        let kek = source.resolve(self.kdf.as_ref())?;
        if kek.r.id != self.kek.id {
            return Err(Error::new(
                ErrorKind::WrongKey,
                format!(
                    "wrong {}: data key {} is wrapped by the key with fingerprint {}, the one given has {}",
                    self.kek.kind.as_str(),
                    self.id,
                    self.kek.id,
                    kek.r.id
                ),
            ));
        }
        let wrapped = crate::store::b64_decode(&self.wrapped).ok_or_else(|| {
            Error::integrity(format!("key record {}: wrapped is not base64", self.id))
        })?;
        let mut ad = KEY_AD.to_vec();
        ad.extend_from_slice(self.id.as_bytes());
        let raw = Zeroizing::new(open(&kek.key, &ad, &wrapped).ok_or_else(|| {
            Error::integrity(format!(
                "key record {}: the key matches its fingerprint but the wrapped data key does not authenticate (the record was altered)",
                self.id
            ))
        })?);
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        if raw.len() != KEY_LEN {
            return Err(Error::integrity(format!(
                "key record {}: the data key is {} bytes, not {KEY_LEN}",
                self.id,
                raw.len()
            )));
        }
        k.copy_from_slice(&raw);
        Ok(DataKey::from_raw(self.id.clone(), k)?.wrapped_by(self.kek.clone()))
    }

    /// [`KeyRecord::unwrap`] by Key Vault: one `unwrapkey` call, with the version that
    /// wrapped.
    async fn unwrap_vault(&self, k: &KeyVaultKey) -> Result<DataKey> {
        let vw = self.key_vault.as_ref().ok_or_else(|| {
            Error::integrity(format!(
                "key record {}: a key-vault record without its key_vault entry",
                self.id
            ))
        })?;
        let at = KeyVaultKey::parse(&vw.key)
            .map_err(|e| Error::integrity(format!("key record {}: {e}", self.id)))?;
        if vault_ref(k).id != self.kek.id || !at.same_key(k) {
            return Err(Error::new(
                ErrorKind::WrongKey,
                format!(
                    "wrong key-vault key: data key {} is wrapped by {}, the pipeline names {}",
                    self.id,
                    at.unversioned(),
                    k.unversioned()
                ),
            ));
        }
        if vw.alg != key_vault::ALG || at.version.is_none() {
            return Err(Error::integrity(format!(
                "key record {}: Key Vault wrap {:?} of {}: this blobpipe unwraps {} with a key version",
                self.id,
                vw.alg,
                vw.key,
                key_vault::ALG
            )));
        }
        let wrapped = crate::store::b64_decode(&self.wrapped).ok_or_else(|| {
            Error::integrity(format!("key record {}: wrapped is not base64", self.id))
        })?;
        let raw = key_vault::unwrap(&at, &wrapped)
            .await
            .map_err(|e| e.context(format!("data key {}", self.id)))?;
        let ok = raw.len() == KEY_LEN && check_value(&raw, &self.id)? == vw.check;
        if !ok {
            return Err(Error::new(
                ErrorKind::WrongKey,
                format!(
                    "wrong key-vault key: {} unwrapped data key {}, but what it gave back does not match the record's check value",
                    at, self.id
                ),
            ));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&raw);
        Ok(DataKey::from_raw(self.id.clone(), key)?.wrapped_by(self.kek.clone()))
    }

    /// This record's data key re-wrapped under `to` (`key rotate`): same id and data key.
    ///
    /// # Errors
    /// As [`KeyRecord::unwrap`] with `from`, and [`KeyRecord::wrap`] with `to`.
    pub async fn rewrap(&self, from: &KekSource, to: &KekSource) -> Result<(KeyRecord, DataKey)> {
        let dk = self.unwrap(from).await?;
        let mut r = KeyRecord::wrap(&dk, to).await?;
        r.created_at = self.created_at;
        r.rotated_at = Some(chrono::Utc::now());
        Ok((r, dk))
    }

    /// Parse a stored key record.
    ///
    /// # Errors
    /// `Integrity` when it is not one.
    pub fn from_json(name: &str, data: &[u8]) -> Result<KeyRecord> {
        serde_json::from_slice(data)
            .map_err(|e| Error::integrity(format!("{name}: not a key record: {e}")))
    }
}

/// What a manifest header records about its encryption (the header stays in clear).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionInfo {
    /// The AEAD ([`ALG`]).
    pub alg: String,
    /// The data key's id (`keys/<key>.json`).
    pub key: String,
    /// The KEK that wrapped it when the snapshot was committed.
    pub kek: KekRef,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dk() -> DataKey {
        DataKey::generate().unwrap()
    }

    #[test]
    fn frames_open_only_in_their_place() {
        let k = dk();
        let mut out = Vec::new();
        k.seal_frame("p1", 3, false, b"hello frame", &mut out)
            .unwrap();
        assert_eq!(out.len(), b"hello frame".len() + FRAME_OVERHEAD);
        assert_eq!(k.open_frame("p1", 3, false, &out).unwrap(), b"hello frame");
        // Another pack, index, the last flag, another key: all refused.
        assert!(k.open_frame("p2", 3, false, &out).is_err());
        assert!(k.open_frame("p1", 4, false, &out).is_err());
        assert!(k.open_frame("p1", 3, true, &out).is_err());
        assert!(dk().open_frame("p1", 3, false, &out).is_err());
        // Any flipped bit.
        for i in [0, 5, 20, out.len() - 1] {
            let mut bad = out.clone();
            bad[i] ^= 1;
            let e = k.open_frame("p1", 3, false, &bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        }
        // Truncated.
        assert!(k.open_frame("p1", 3, false, &out[..out.len() - 1]).is_err());
        // Synthetic nonces: the same frame seals to the same bytes, another one does not
        // reuse its nonce.
        let mut again = Vec::new();
        k.seal_frame("p1", 3, false, b"hello frame", &mut again)
            .unwrap();
        assert_eq!(again, out);
        let mut other = Vec::new();
        k.seal_frame("p1", 3, false, b"hello frame!", &mut other)
            .unwrap();
        assert_ne!(other[4..16], out[4..16]);
    }

    #[test]
    fn a_frame_stream_detects_a_cut_at_a_frame_boundary() {
        let k = dk();
        let mut out = Vec::new();
        for (i, f) in [b"aa".as_slice(), b"bbb", b"c"].iter().enumerate() {
            k.seal_frame("p", i as u64, i == 2, f, &mut out).unwrap();
        }
        let mut got = Vec::new();
        k.open_frames("p", &out[..], &mut |b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, b"aabbbc");
        let cut = 2 * FRAME_OVERHEAD + 5;
        let e = k
            .open_frames("p", &out[..cut], &mut |_| Ok(()))
            .unwrap_err();
        assert!(e.to_string().contains("frame 1"), "{e}");
    }

    #[test]
    fn blobs_are_bound_to_their_name() {
        let k = dk();
        let s = k
            .seal_blob("segments/ab/x.jsonl.gz", b"secret paths")
            .unwrap();
        assert!(!s.windows(12).any(|w| w == b"secret paths"));
        assert_eq!(
            k.open_blob("segments/ab/x.jsonl.gz", &s).unwrap(),
            b"secret paths"
        );
        assert!(k.open_blob("segments/ab/y.jsonl.gz", &s).is_err());
        assert!(dk().open_blob("segments/ab/x.jsonl.gz", &s).is_err());
        assert!(k.open_blob("n", b"\x1f\x8bplain gzip").is_err());
    }

    #[tokio::test]
    async fn key_records_tell_a_wrong_key_from_a_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, hex::encode([7u8; 32])).unwrap();
        std::fs::write(&b, hex::encode([8u8; 32])).unwrap();
        let (sa, sb) = (KekSource::KeyFile(a), KekSource::KeyFile(b));
        let k = dk();
        let rec = KeyRecord::wrap(&k, &sa).await.unwrap();
        let back = rec.unwrap(&sa).await.unwrap();
        assert_eq!(back.raw[..], k.raw[..]);
        assert_eq!(
            rec.unwrap(&sb).await.unwrap_err().kind(),
            ErrorKind::WrongKey
        );
        let mut bad = rec.clone();
        let mut w = crate::store::b64_decode(&bad.wrapped).unwrap();
        w[20] ^= 1;
        bad.wrapped = crate::store::b64(&w);
        assert_eq!(
            bad.unwrap(&sa).await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        // Rotation keeps the data key.
        let (rot, _) = rec.rewrap(&sa, &sb).await.unwrap();
        assert_eq!(rot.unwrap(&sb).await.unwrap().raw[..], k.raw[..]);
        assert_eq!(
            rot.unwrap(&sa).await.unwrap_err().kind(),
            ErrorKind::WrongKey
        );
        let json = serde_json::to_vec(&rot).unwrap();
        assert_eq!(KeyRecord::from_json("k", &json).unwrap(), rot);
        // Nothing secret in Debug.
        assert!(!format!("{k:?}").contains(&hex::encode(&k.raw[..])));
    }

    #[test]
    fn a_missing_or_malformed_key_is_a_config_error() {
        let e = KekSource::KeyEnv("BLOBPIPE_TEST_UNSET_KEY_VAR".into())
            .resolve(None)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short");
        std::fs::write(&p, "abcd").unwrap();
        let e = KekSource::KeyFile(p).resolve(None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("openssl rand -hex 32"), "{e}");
    }

    #[tokio::test]
    async fn passphrases_go_through_argon2id() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "correct horse\n").unwrap();
        std::fs::write(&b, "battery staple\n").unwrap();
        let k = dk();
        let rec = KeyRecord::wrap(&k, &KekSource::PassphraseFile(a.clone()))
            .await
            .unwrap();
        let kdf = rec.kdf.clone().unwrap();
        assert_eq!(
            (kdf.alg.as_str(), kdf.m_kib, kdf.t),
            ("argon2id", ARGON2_M_KIB, ARGON2_T)
        );
        assert!(rec.unwrap(&KekSource::PassphraseFile(a)).await.is_ok());
        let e = rec.unwrap(&KekSource::PassphraseFile(b)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WrongKey, "{e}");
    }
}
