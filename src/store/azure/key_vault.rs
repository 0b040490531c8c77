//! Azure Key Vault as a key-encryption key (`[encryption] key_vault_key`): the pipeline's
//! data key is wrapped and unwrapped by an RSA key that never leaves the vault
//! (RSA-OAEP-256, `wrapkey` / `unwrapkey`).
//!
//! Why it lives in `store::azure`: it is an Azure client like the store's and shares all
//! of its plumbing — the Entra ID steps of the one credential chain
//! ([`credential::resolve_token`]: managed identity, workload identity, client secret,
//! Azure CLI), the one reqwest client ([`client::http_client`], rustls with `ring`), and
//! the one retry policy run by the SDK's retry loop ([`client::StoreRetryPolicy`]).
//! `manifest::crypt` calls it and owns the key record; this module knows no record.
//!
//! Outcomes: 400 (the value does not decrypt under this key version: another key),
//! 403 (the identity may not use the key) and 404 (no such key or version) are a wrong
//! key ([`ErrorKind::WrongKey`]); transient statuses and network errors are retried by
//! the policy, then reported as a transient store error.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_security_keyvault_keys::models::{EncryptionAlgorithm, KeyOperationParameters};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions, ResourceId};
use zeroize::Zeroizing;

use super::client::{self, StoreRetryPolicy};
use super::credential::{self, Resolved};
use crate::error::{Error, ErrorKind, Result};
use crate::store::config::RetryConfig;

/// The wrap algorithm, as Key Vault and key records name it.
pub const ALG: &str = "RSA-OAEP-256";

/// A key in a vault: `https://<vault>.vault.azure.net/keys/<name>[/<version>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVaultKey {
    /// The vault's URL, `https://<vault>.vault.azure.net`.
    pub vault: String,
    /// The key's name.
    pub name: String,
    /// The key version, when pinned (else the vault's current version wraps).
    pub version: Option<String>,
}

impl KeyVaultKey {
    /// Parse a key identifier.
    ///
    /// # Errors
    /// `Config` when it is not an `https://…/keys/<name>[/<version>]` URL.
    pub fn parse(s: &str) -> Result<KeyVaultKey> {
        let bad = |why: &str| {
            Error::config(format!(
                "key_vault_key {s:?}: {why}; expected https://<vault>.vault.azure.net/keys/<name>[/<version>] (the key's identifier as the portal or `az keyvault key show --query key.kid` gives it)"
            ))
        };
        let url = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(bad("Key Vault is reached over https only"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("it has a query or fragment"));
        }
        let id = ResourceId::from_str(s).map_err(|e| bad(&e.to_string()))?;
        let segs: Vec<&str> = url.path_segments().map(|p| p.collect()).unwrap_or_default();
        if segs.first() != Some(&"keys") || !(2..=3).contains(&segs.len()) || id.name.is_empty() {
            return Err(bad("the path is not /keys/<name>[/<version>]"));
        }
        Ok(KeyVaultKey {
            vault: id.vault_url.trim_end_matches('/').to_string(),
            name: id.name,
            version: id.version.filter(|v| !v.is_empty()),
        })
    }

    /// The key's identifier without a version (what identifies the key across versions).
    pub fn unversioned(&self) -> String {
        format!("{}/keys/{}", self.vault, self.name)
    }

    /// Whether `other` is a version of the same key (Key Vault names are case-insensitive).
    pub fn same_key(&self, other: &KeyVaultKey) -> bool {
        self.unversioned()
            .eq_ignore_ascii_case(&other.unversioned())
    }

    /// The key's identifier, with its version when it has one.
    pub fn id(&self) -> String {
        match &self.version {
            Some(v) => format!("{}/{v}", self.unversioned()),
            None => self.unversioned(),
        }
    }
}

impl std::fmt::Display for KeyVaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id())
    }
}

/// A data key wrapped by a vault key.
#[derive(Debug, Clone)]
pub struct Wrapped {
    /// The exact key (with the version that wrapped) as the vault reported it.
    pub key: KeyVaultKey,
    /// The RSA-OAEP-256 ciphertext.
    pub value: Vec<u8>,
}

/// Whether a token credential for `key`'s vault can be had (no network call).
///
/// # Errors
/// As [`credential::resolve_token`].
pub fn preflight(key: &KeyVaultKey) -> Result<()> {
    credential::resolve_token(&format!("Key Vault key {key}"), &credential::process_env).map(drop)
}

/// A client for `key`'s vault, with the chain's token credential.
fn key_client(key: &KeyVaultKey) -> Result<KeyClient> {
    let chosen =
        credential::resolve_token(&format!("Key Vault key {key}"), &credential::process_env)?;
    let Resolved::Token(cred) = chosen.resolved else {
        return Err(Error::internal("the token chain resolved to a SAS"));
    };
    let options = KeyClientOptions {
        client_options: ClientOptions {
            retry: RetryOptions::custom(Arc::new(StoreRetryPolicy::new(&RetryConfig::default()))),
            transport: Some(Transport::new(client::http_client(Duration::from_secs(
                60,
            ))?)),
            ..Default::default()
        },
        ..Default::default()
    };
    KeyClient::new(&key.vault, cred, Some(options))
        .map_err(|e| Error::config(format!("Key Vault {}: {e}", key.vault)))
}

fn map(op: &str, key: &KeyVaultKey, e: azure_core::Error) -> Error {
    match client::http_parts(&e) {
        Some((status @ (400 | 403 | 404), code)) => {
            let why = match status {
                400 => "the vault could not unwrap with this key (another key or version wrapped it)",
                403 => "the identity may not use this key: grant it the \"Key Vault Crypto Service Encryption User\" role on the key (or \"Key Vault Crypto User\"), or the wrapKey and unwrapKey key permissions",
                _ => "no such key or version in the vault",
            };
            Error::new(
                ErrorKind::WrongKey,
                format!("Key Vault {op} with {key}: HTTP {status} {code}: {why}"),
            )
        }
        _ => client::map_error(&format!("Key Vault {op} with {key}"), e),
    }
}

/// Wrap `plain` (a data key) with `key` (its pinned version, else the current one).
///
/// # Errors
/// `Config` without a token credential; `WrongKey` for 400/403/404; a transient `Store`
/// error when the vault stays unreachable after the retries.
pub async fn wrap(key: &KeyVaultKey, plain: &[u8]) -> Result<Wrapped> {
    let c = key_client(key)?;
    let params = KeyOperationParameters {
        algorithm: Some(EncryptionAlgorithm::RsaOaep256),
        value: Some(plain.to_vec()),
        ..Default::default()
    };
    let opts = azure_security_keyvault_keys::models::KeyClientWrapKeyOptions {
        key_version: key.version.clone(),
        ..Default::default()
    };
    let body = params
        .try_into()
        .map_err(|e| Error::internal(format!("Key Vault wrap request: {e}")))?;
    let r = c
        .wrap_key(&key.name, body, Some(opts))
        .await
        .map_err(|e| map("wrapKey", key, e))?
        .into_model()
        .map_err(|e| Error::new(ErrorKind::Store, format!("Key Vault wrapKey reply: {e}")))?;
    let kid = r.kid.ok_or_else(|| {
        Error::new(
            ErrorKind::Store,
            "Key Vault wrapKey reply: no kid".to_string(),
        )
    })?;
    let wrapped_by = KeyVaultKey::parse(&kid).map_err(|e| e.context("Key Vault wrapKey reply"))?;
    if !wrapped_by.same_key(key) || wrapped_by.version.is_none() {
        return Err(Error::new(
            ErrorKind::Store,
            format!("Key Vault wrapKey reply names key {kid}, not a version of {key}"),
        ));
    }
    let value = r
        .result
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::new(ErrorKind::Store, "Key Vault wrapKey reply: no value"))?;
    Ok(Wrapped {
        key: wrapped_by,
        value,
    })
}

/// Unwrap `wrapped` with `key`, which must name the version that wrapped it.
///
/// # Errors
/// As [`wrap`]; `Internal` when `key` has no version.
pub async fn unwrap(key: &KeyVaultKey, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let version = key
        .version
        .clone()
        .ok_or_else(|| Error::internal("unwrap needs the key version that wrapped"))?;
    let c = key_client(key)?;
    let params = KeyOperationParameters {
        algorithm: Some(EncryptionAlgorithm::RsaOaep256),
        value: Some(wrapped.to_vec()),
        ..Default::default()
    };
    let body = params
        .try_into()
        .map_err(|e| Error::internal(format!("Key Vault unwrap request: {e}")))?;
    let r = c
        .unwrap_key(&key.name, &version, body, None)
        .await
        .map_err(|e| map("unwrapKey", key, e))?
        .into_model()
        .map_err(|e| Error::new(ErrorKind::Store, format!("Key Vault unwrapKey reply: {e}")))?;
    r.result
        .map(Zeroizing::new)
        .ok_or_else(|| Error::new(ErrorKind::Store, "Key Vault unwrapKey reply: no value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_identifiers_parse_with_and_without_version() {
        let k = KeyVaultKey::parse("https://kv1.vault.azure.net/keys/backup/0123abcd").unwrap();
        assert_eq!(k.vault, "https://kv1.vault.azure.net");
        assert_eq!(k.name, "backup");
        assert_eq!(k.version.as_deref(), Some("0123abcd"));
        assert_eq!(k.id(), "https://kv1.vault.azure.net/keys/backup/0123abcd");
        let k = KeyVaultKey::parse("https://kv1.vault.azure.net/keys/backup").unwrap();
        assert_eq!(k.version, None);
        assert_eq!(k.unversioned(), "https://kv1.vault.azure.net/keys/backup");
        let upper = KeyVaultKey::parse("https://KV1.vault.azure.net/keys/Backup/v9").unwrap();
        assert!(k.same_key(&upper), "names are case-insensitive");
        let other = KeyVaultKey::parse("https://kv1.vault.azure.net/keys/backup2").unwrap();
        assert!(!k.same_key(&other));
        for bad in [
            "http://kv1.vault.azure.net/keys/backup",
            "https://kv1.vault.azure.net/secrets/backup",
            "https://kv1.vault.azure.net/keys/backup?x=1",
            "kv1/backup",
        ] {
            let e = KeyVaultKey::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad}: {e}");
        }
    }
}
