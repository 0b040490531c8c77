//! `[encryption]`: where the key-encryption key comes from, checked into
//! [`EncryptionConfig`] (the format's own type, `manifest::crypt`).
//!
//! Exactly one source: `key_file`, `key_env`, `passphrase_env`, `passphrase_file` or
//! `key_vault_key` (an RSA key in Azure Key Vault, its identifier checked here). The table
//! names where the secret is, never the secret itself, so a pipeline file can be
//! committed; the secret is read (and a missing one reported) when a command opens the
//! pipeline's store.

use std::path::Path;

use super::check::Checker;
use super::raw::EncryptionSpec;
use crate::manifest::crypt::{EncryptionConfig, KekSource};
use crate::store::azure::key_vault::KeyVaultKey;

const FIX: &str = "name exactly one of key_file = \"/etc/blobpipe/backup.key\" (64 hex digits, e.g. from `openssl rand -hex 32`), key_env = \"VAR\", passphrase_env = \"VAR\", passphrase_file = \"/path\" or key_vault_key = \"https://<vault>.vault.azure.net/keys/<name>[/<version>]\"";

/// Check `[encryption]` (paths relative to the pipeline file's directory `base`).
pub(super) fn check_encryption(
    c: &mut Checker<'_>,
    s: Option<&EncryptionSpec>,
    base: &Path,
) -> Option<EncryptionConfig> {
    let s = s?;
    let path = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let mut found = Vec::new();
    if let Some(v) = &s.key_file {
        found.push((v.span(), KekSource::KeyFile(path(v.get_ref()))));
    }
    if let Some(v) = &s.key_env {
        found.push((v.span(), KekSource::KeyEnv(v.get_ref().clone())));
    }
    if let Some(v) = &s.passphrase_env {
        found.push((v.span(), KekSource::PassphraseEnv(v.get_ref().clone())));
    }
    if let Some(v) = &s.passphrase_file {
        found.push((v.span(), KekSource::PassphraseFile(path(v.get_ref()))));
    }
    if let Some(v) = &s.key_vault_key {
        match KeyVaultKey::parse(v.get_ref()) {
            Ok(k) => found.push((v.span(), KekSource::KeyVault(k))),
            Err(e) => c.at(
                v.span(),
                "encryption.key_vault_key",
                e,
                "give the key's identifier, e.g. https://myvault.vault.azure.net/keys/blobpipe-kek",
            ),
        }
    }
    for (span, src) in &found {
        let empty = match src {
            KekSource::KeyEnv(v) | KekSource::PassphraseEnv(v) => v.trim().is_empty(),
            KekSource::KeyFile(p) | KekSource::PassphraseFile(p) => p == base,
            KekSource::KeyVault(_) => false,
        };
        if empty {
            c.at(span.clone(), "encryption", "the key source is empty", FIX);
        }
    }
    match found.len() {
        0 => {
            c.missing("encryption.key_file", FIX);
            None
        }
        1 => found.pop().map(|(_, kek)| EncryptionConfig { kek }),
        _ => {
            c.at(
                found[1].0.clone(),
                "encryption",
                "more than one key source",
                FIX,
            );
            None
        }
    }
}
