//! Which credential the store uses, and the account SAS the engine signs itself.
//!
//! The 1.x Azure SDK takes either an Entra ID `TokenCredential` or a SAS in the URL; it
//! has no shared-key credential and no `DefaultAzureCredential`. So blobpipe resolves one
//! documented chain, first match wins, by looking at the target and the environment
//! (no network probing, so the choice is fast and predictable):
//!
//! 1. a connection string (the target itself, or `AZURE_STORAGE_CONNECTION_STRING`) with
//!    `AccountKey` → signed account SAS; with `SharedAccessSignature` → that SAS;
//! 2. `AZURE_STORAGE_KEY` → signed account SAS;
//! 3. a SAS in the target URL, or `AZURE_STORAGE_SAS_TOKEN`;
//! 4. managed identity when `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` are set (Container
//!    Apps, App Service, Functions), user-assigned via `AZURE_CLIENT_ID`;
//! 5. workload identity (`AZURE_FEDERATED_TOKEN_FILE` + `AZURE_TENANT_ID` + `AZURE_CLIENT_ID`);
//! 6. client secret (`AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`);
//! 7. Azure CLI (`az` on `PATH`);
//! 8. the emulator's public well-known key, only for `devstoreaccount1` on loopback.
//!
//! `BLOBPIPE_AZURE_CREDENTIAL` (`key`, `sas`, `managed-identity`, `workload-identity`,
//! `client-secret`, `azure-cli`) forces one step; `managed-identity` forced without
//! `IDENTITY_ENDPOINT` uses the VM instance metadata service (IMDS).
//!
//! A signed SAS lives [`SAS_LIFETIME`] and is re-signed when less than [`SAS_RENEW_MARGIN`]
//! is left, by the [`SasPolicy`] that adds it to every request. Neither the key nor the
//! SAS ever reaches a URL the SDK stores, a log line or an error.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::builder::{AzureTarget, EMULATOR_ACCOUNT, EMULATOR_KEY};
use crate::error::{Error, Result};
use crate::support::secret::Secret;

/// How long a self-signed account SAS is valid.
pub const SAS_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Re-sign when less than this is left.
pub const SAS_RENEW_MARGIN: Duration = Duration::from_secs(3600);
/// Service version written into signed SAS tokens (`sv`).
pub const SAS_VERSION: &str = "2022-11-02";

/// Looks up an environment variable (injectable for tests).
pub type EnvLookup<'a> = &'a (dyn Fn(&str) -> Option<String> + Send + Sync);

/// The process environment, as an [`EnvLookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The credential kinds of the chain, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// Account key (connection string or `AZURE_STORAGE_KEY`), signed into an account SAS.
    AccountKey,
    /// A SAS token from the URL, a connection string or `AZURE_STORAGE_SAS_TOKEN`.
    Sas,
    /// Managed identity (system or user-assigned).
    ManagedIdentity,
    /// Workload identity federation (AKS and friends).
    WorkloadIdentity,
    /// Service principal with a client secret.
    ClientSecret,
    /// The signed-in Azure CLI user.
    AzureCli,
    /// The public emulator key (loopback `devstoreaccount1` only).
    EmulatorKey,
}

impl CredentialKind {
    /// Stable name as used in reports and `BLOBPIPE_AZURE_CREDENTIAL`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::AccountKey => "key",
            CredentialKind::Sas => "sas",
            CredentialKind::ManagedIdentity => "managed-identity",
            CredentialKind::WorkloadIdentity => "workload-identity",
            CredentialKind::ClientSecret => "client-secret",
            CredentialKind::AzureCli => "azure-cli",
            CredentialKind::EmulatorKey => "emulator-key",
        }
    }
}

/// The resolved credential: what to attach to requests.
#[derive(Clone)]
pub enum Resolved {
    /// Add a SAS to every request (static or self-signed).
    Sas(Arc<SasPolicy>),
    /// Bearer tokens from Entra ID.
    Token(Arc<dyn TokenCredential>),
}

/// The chain's choice, with where it came from (never the value).
#[derive(Clone)]
pub struct Chosen {
    /// Kind chosen.
    pub kind: CredentialKind,
    /// Where it came from, e.g. "AZURE_STORAGE_KEY" or "SAS in the target URL".
    pub source: String,
    /// Every step looked at before the choice, with why it did not apply.
    pub tried: Vec<String>,
    /// What to attach.
    pub resolved: Resolved,
}

impl fmt::Debug for Chosen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chosen")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .field("tried", &self.tried)
            .finish_non_exhaustive()
    }
}

/// Resolve the credential chain for `target`.
///
/// # Errors
/// `Config` when nothing applies (listing every step tried and why it did not apply),
/// when a forced kind is unavailable, or when a found credential is malformed (a key that
/// is not base64). Never includes a secret value.
pub fn resolve(target: &AzureTarget, env: EnvLookup<'_>) -> Result<Chosen> {
    resolve_for(target, env, SasServices::Blob)
}

/// Which storage service a self-signed account SAS is for (`ss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SasServices {
    /// The blob service (`ss=b`): stores.
    Blob,
    /// The queue service (`ss=q`): the hand-off queue.
    Queue,
}

impl SasServices {
    fn ss(self) -> &'static str {
        match self {
            SasServices::Blob => "b",
            SasServices::Queue => "q",
        }
    }

    fn sp(self) -> &'static str {
        // Account SAS permissions, in the order the service requires.
        match self {
            SasServices::Blob => "rwdlacutf",
            SasServices::Queue => "rwdlacup",
        }
    }
}

/// [`resolve`] for a given service: `target.service_url` is that service's endpoint
/// (`https://acct.queue.core.windows.net` for [`SasServices::Queue`]), and a signed
/// account SAS is signed for that service.
///
/// # Errors
/// As [`resolve`].
pub fn resolve_for(
    target: &AzureTarget,
    env: EnvLookup<'_>,
    services: SasServices,
) -> Result<Chosen> {
    // azure_identity builds reqwest clients for token requests.
    crate::support::http::ensure_tls_provider();
    let (forced, forced_kind) = forced_kind(env)?;
    let want = |k: CredentialKind| forced_kind.is_none_or(|f| f == k);
    let mut tried = Vec::new();
    let chosen = |kind, source: &str, tried: &mut Vec<String>, resolved| Chosen {
        kind,
        source: source.to_string(),
        tried: std::mem::take(tried),
        resolved,
    };
    let https = target.service_url.scheme() == "https";

    // 1. Connection string: the target itself, then the environment.
    if want(CredentialKind::AccountKey) || want(CredentialKind::Sas) {
        // The account key (signed for `services`) or SAS of a parsed connection string,
        // named by where it came from.
        let from_connection_string =
            |cs: &AzureTarget, place: &str, tried: &mut Vec<String>| -> Result<Option<Chosen>> {
                if let (Some(key), true) = (&cs.account_key, want(CredentialKind::AccountKey)) {
                    let signer =
                        AccountSasSigner::new(&target.account, key, !https)?.for_services(services);
                    return Ok(Some(chosen(
                        CredentialKind::AccountKey,
                        &format!("AccountKey in {place}"),
                        tried,
                        Resolved::Sas(Arc::new(SasPolicy::signed(signer))),
                    )));
                }
                if let (Some(sas), true) = (&cs.sas, want(CredentialKind::Sas)) {
                    return Ok(Some(chosen(
                        CredentialKind::Sas,
                        &format!("SharedAccessSignature in {place}"),
                        tried,
                        Resolved::Sas(Arc::new(SasPolicy::fixed(sas.clone()))),
                    )));
                }
                Ok(None)
            };
        if target.from_connection_string {
            if let Some(c) =
                from_connection_string(target, "the target connection string", &mut tried)?
            {
                return Ok(c);
            }
        }
        match env("AZURE_STORAGE_CONNECTION_STRING") {
            None => tried.push("connection string: AZURE_STORAGE_CONNECTION_STRING not set".into()),
            Some(cs) => {
                let parsed = AzureTarget::parse(&Secret::new(cs), &target.container);
                match parsed {
                    Err(e) => {
                        return Err(e.context("AZURE_STORAGE_CONNECTION_STRING"));
                    }
                    Ok(p) if p.account != target.account => tried.push(format!(
                        "connection string: AZURE_STORAGE_CONNECTION_STRING is for account {:?}, not {:?}",
                        p.account, target.account
                    )),
                    Ok(p) => {
                        if let Some(c) = from_connection_string(&p, "AZURE_STORAGE_CONNECTION_STRING", &mut tried)? {
                            return Ok(c);
                        }
                        tried.push("connection string: AZURE_STORAGE_CONNECTION_STRING has no usable credential".into());
                    }
                }
            }
        }
    }
    // 2. Account key.
    if want(CredentialKind::AccountKey) {
        match env("AZURE_STORAGE_KEY") {
            Some(k) => {
                let signer = AccountSasSigner::new(&target.account, &Secret::new(k), !https)?
                    .for_services(services);
                return Ok(chosen(
                    CredentialKind::AccountKey,
                    "AZURE_STORAGE_KEY",
                    &mut tried,
                    Resolved::Sas(Arc::new(SasPolicy::signed(signer))),
                ));
            }
            None => tried.push("account key: AZURE_STORAGE_KEY not set".into()),
        }
    }
    // 3. SAS.
    if want(CredentialKind::Sas) {
        if let (Some(sas), false) = (&target.sas, target.from_connection_string) {
            return Ok(chosen(
                CredentialKind::Sas,
                "SAS in the target URL",
                &mut tried,
                Resolved::Sas(Arc::new(SasPolicy::fixed(sas.clone()))),
            ));
        }
        match env("AZURE_STORAGE_SAS_TOKEN") {
            Some(s) => {
                return Ok(chosen(
                    CredentialKind::Sas,
                    "AZURE_STORAGE_SAS_TOKEN",
                    &mut tried,
                    Resolved::Sas(Arc::new(SasPolicy::fixed(Secret::new(
                        s.trim_start_matches('?').to_string(),
                    )))),
                ));
            }
            None => {
                tried.push("SAS: none in the target URL and AZURE_STORAGE_SAS_TOKEN not set".into())
            }
        }
    }
    if let Some((kind, source, cred)) = token_steps(forced_kind, https, env, &mut tried)? {
        return Ok(chosen(kind, &source, &mut tried, Resolved::Token(cred)));
    }
    // 8. Emulator.
    if forced_kind.is_none() && target.is_loopback() && target.account == EMULATOR_ACCOUNT {
        let signer = AccountSasSigner::new(EMULATOR_ACCOUNT, &Secret::new(EMULATOR_KEY), true)?
            .for_services(services);
        return Ok(chosen(
            CredentialKind::EmulatorKey,
            "well-known emulator key (loopback devstoreaccount1)",
            &mut tried,
            Resolved::Sas(Arc::new(SasPolicy::signed(signer))),
        ));
    }
    let mut msg = format!("no usable Azure credential for {}", target.display());
    if let Some(f) = forced {
        msg.push_str(&format!(" (BLOBPIPE_AZURE_CREDENTIAL={f})"));
    }
    msg.push_str("; tried: ");
    msg.push_str(&tried.join("; "));
    Err(Error::config(msg))
}

/// `BLOBPIPE_AZURE_CREDENTIAL`, if set: its text and the kind it forces.
fn forced_kind(env: EnvLookup<'_>) -> Result<(Option<String>, Option<CredentialKind>)> {
    let forced = env("BLOBPIPE_AZURE_CREDENTIAL");
    let kind = match forced.as_deref() {
        None => None,
        Some("key") => Some(CredentialKind::AccountKey),
        Some("sas") => Some(CredentialKind::Sas),
        Some("managed-identity") => Some(CredentialKind::ManagedIdentity),
        Some("workload-identity") => Some(CredentialKind::WorkloadIdentity),
        Some("client-secret") => Some(CredentialKind::ClientSecret),
        Some("azure-cli") => Some(CredentialKind::AzureCli),
        Some(other) => {
            return Err(Error::config(format!(
                "BLOBPIPE_AZURE_CREDENTIAL={other:?} is not one of key, sas, managed-identity, \
                 workload-identity, client-secret, azure-cli"
            )))
        }
    };
    Ok((forced, kind))
}

/// The chain's Entra ID steps (4–7) alone, for a service that takes only bearer tokens
/// (Azure Key Vault): the same environment gives the same credential the store's
/// chain would pick once it is past keys and SAS. `what` names the service in messages.
///
/// # Errors
/// `Config` when no token credential applies (naming what would: managed identity,
/// workload identity, client secret variables, `az login`), or when
/// `BLOBPIPE_AZURE_CREDENTIAL` forces a key or SAS, which such a service cannot use.
pub fn resolve_token(what: &str, env: EnvLookup<'_>) -> Result<Chosen> {
    crate::support::http::ensure_tls_provider();
    let (forced, kind) = forced_kind(env)?;
    if let Some(k @ (CredentialKind::AccountKey | CredentialKind::Sas)) = kind {
        return Err(Error::config(format!(
            "{what} needs an Entra ID token, but BLOBPIPE_AZURE_CREDENTIAL={} forces a {}; \
             unset it or force managed-identity, workload-identity, client-secret or azure-cli",
            forced.unwrap_or_default(),
            k.as_str()
        )));
    }
    let mut tried = Vec::new();
    if let Some((kind, source, cred)) = token_steps(kind, true, env, &mut tried)? {
        return Ok(Chosen {
            kind,
            source,
            tried,
            resolved: Resolved::Token(cred),
        });
    }
    Err(Error::config(format!(
        "{what} needs an Entra ID token and no token credential is available (a storage key \
         or SAS does not authorize Key Vault): give the job a managed identity \
         (IDENTITY_ENDPOINT/IDENTITY_HEADER, AZURE_CLIENT_ID for a user-assigned one), or set \
         AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_CLIENT_SECRET, or workload identity, or \
         sign in with `az login`; tried: {}",
        tried.join("; ")
    )))
}

/// Steps 4–7 of the chain (managed identity, workload identity, client secret, Azure
/// CLI): the Entra ID token credentials, shared by the store and Key Vault.
#[allow(clippy::type_complexity)]
fn token_steps(
    forced_kind: Option<CredentialKind>,
    https: bool,
    env: EnvLookup<'_>,
    tried: &mut Vec<String>,
) -> Result<Option<(CredentialKind, String, Arc<dyn TokenCredential>)>> {
    let want = |k: CredentialKind| forced_kind.is_none_or(|f| f == k);
    // Token credentials need https (the SDK refuses bearer tokens over http).
    let token_ok = |tried: &mut Vec<String>, what: &str| {
        if https {
            true
        } else {
            tried.push(format!("{what}: needs an https endpoint"));
            false
        }
    };
    let client_id = env("AZURE_CLIENT_ID");
    let tenant_id = env("AZURE_TENANT_ID");
    // 4. Managed identity.
    if want(CredentialKind::ManagedIdentity) {
        let app_service = env("IDENTITY_ENDPOINT").is_some() && env("IDENTITY_HEADER").is_some();
        if (app_service || forced_kind == Some(CredentialKind::ManagedIdentity))
            && token_ok(tried, "managed identity")
        {
            use azure_identity::{
                ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
            };
            let opts = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                ..Default::default()
            };
            let cred = ManagedIdentityCredential::new(Some(opts))
                .map_err(|e| Error::config(format!("managed identity: {e}")))?;
            let source = match (app_service, &client_id) {
                (true, None) => "IDENTITY_ENDPOINT (system-assigned)",
                (true, Some(_)) => "IDENTITY_ENDPOINT (user-assigned, AZURE_CLIENT_ID)",
                (false, None) => "IMDS (system-assigned, forced)",
                (false, Some(_)) => "IMDS (user-assigned via AZURE_CLIENT_ID, forced)",
            };
            return Ok(Some((
                CredentialKind::ManagedIdentity,
                source.to_string(),
                cred,
            )));
        }
        if !app_service {
            tried.push("managed identity: IDENTITY_ENDPOINT/IDENTITY_HEADER not set (force IMDS with BLOBPIPE_AZURE_CREDENTIAL=managed-identity)".into());
        }
    }
    // 5. Workload identity.
    if want(CredentialKind::WorkloadIdentity) {
        let file = env("AZURE_FEDERATED_TOKEN_FILE");
        if file.is_some()
            && client_id.is_some()
            && tenant_id.is_some()
            && token_ok(tried, "workload identity")
        {
            let cred = azure_identity::WorkloadIdentityCredential::new(Some(
                azure_identity::WorkloadIdentityCredentialOptions {
                    client_id: client_id.clone(),
                    tenant_id: tenant_id.clone(),
                    token_file_path: file.map(Into::into),
                    ..Default::default()
                },
            ))
            .map_err(|e| Error::config(format!("workload identity: {e}")))?;
            return Ok(Some((
                CredentialKind::WorkloadIdentity,
                "AZURE_FEDERATED_TOKEN_FILE".to_string(),
                cred,
            )));
        }
        if file.is_none() {
            tried.push("workload identity: AZURE_FEDERATED_TOKEN_FILE not set".into());
        }
    }
    // 6. Client secret.
    if want(CredentialKind::ClientSecret) {
        let secret = env("AZURE_CLIENT_SECRET");
        match (&tenant_id, &client_id, secret) {
            (Some(t), Some(c), Some(s)) if token_ok(tried, "client secret") => {
                let cred = azure_identity::ClientSecretCredential::new(
                    t,
                    c.clone(),
                    azure_core::credentials::Secret::new(s),
                    None,
                )
                .map_err(|e| Error::config(format!("client secret: {e}")))?;
                return Ok(Some((
                    CredentialKind::ClientSecret,
                    "AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_CLIENT_SECRET".to_string(),
                    cred,
                )));
            }
            (_, _, None) => tried.push("client secret: AZURE_CLIENT_SECRET not set".into()),
            _ => tried
                .push("client secret: AZURE_TENANT_ID and AZURE_CLIENT_ID must both be set".into()),
        }
    }
    // 7. Azure CLI.
    if want(CredentialKind::AzureCli) {
        if on_path("az", env) && token_ok(tried, "Azure CLI") {
            let cred = azure_identity::AzureCliCredential::new(Some(
                azure_identity::AzureCliCredentialOptions {
                    tenant_id: tenant_id.clone(),
                    ..Default::default()
                },
            ))
            .map_err(|e| Error::config(format!("Azure CLI: {e}")))?;
            return Ok(Some((
                CredentialKind::AzureCli,
                "az (Azure CLI login)".to_string(),
                cred,
            )));
        }
        tried.push("Azure CLI: `az` not found on PATH".into());
    }
    Ok(None)
}

fn on_path(cmd: &str, env: EnvLookup<'_>) -> bool {
    env("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            let f = d.join(cmd);
            f.is_file()
        })
    })
}

/// Signs account SAS tokens from an account key.
pub struct AccountSasSigner {
    account: String,
    key: Vec<u8>,
    allow_http: bool,
    services: SasServices,
}

impl fmt::Debug for AccountSasSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountSasSigner")
            .field("account", &self.account)
            .field("key", &"***")
            .finish()
    }
}

impl AccountSasSigner {
    /// A signer for `account` with the base64 `key`. `allow_http` adds `http` to the
    /// signed protocols (emulator only).
    ///
    /// # Errors
    /// `Config` if the key is not base64 (the key itself is not shown).
    pub fn new(account: &str, key: &Secret, allow_http: bool) -> Result<Self> {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(key.expose().trim())
            .map_err(|_| {
                Error::config(format!(
                    "the account key for {account:?} is not valid base64 (value not shown)"
                ))
            })?;
        Ok(Self {
            account: account.to_string(),
            key,
            allow_http,
            services: SasServices::Blob,
        })
    }

    /// Sign for `services` instead of the blob service.
    pub fn for_services(mut self, services: SasServices) -> Self {
        self.services = services;
        self
    }

    /// The string-to-sign of an account SAS (service version 2020-12-06 and later),
    /// including the final newline after the (empty) encryption scope.
    pub fn string_to_sign(&self, p: &SasParams) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.account, p.sp, p.ss, p.srt, p.st, p.se, p.sip, p.spr, p.sv, p.ses
        )
    }

    /// Sign `p`: base64(HMAC-SHA256(key, string-to-sign)).
    pub fn signature(&self, p: &SasParams) -> String {
        // HMAC accepts keys of any length; new_from_slice cannot fail for Hmac<Sha256>.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(self.string_to_sign(p).as_bytes());
        crate::store::b64(&mac.finalize().into_bytes())
    }

    /// The parameters of a fresh token valid from 15 minutes ago (clock skew) for
    /// `lifetime`.
    pub fn params(&self, now: DateTime<Utc>, lifetime: Duration) -> SasParams {
        let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(8));
        SasParams {
            sp: self.services.sp().into(),
            ss: self.services.ss().into(),
            srt: "sco".into(),
            st: fmt(now - chrono::Duration::minutes(15)),
            se: fmt(now + lifetime),
            sip: String::new(),
            spr: if self.allow_http {
                "https,http"
            } else {
                "https"
            }
            .into(),
            sv: SAS_VERSION.into(),
            ses: String::new(),
        }
    }

    /// A complete query string (`sv=…&ss=…&…&sig=…`) and its expiry.
    pub fn token(&self, now: DateTime<Utc>, lifetime: Duration) -> (Secret, DateTime<Utc>) {
        self.sign_query(self.params(now, lifetime), now, lifetime)
    }

    /// A token that can only **read objects** (`sp=r`, `srt=o`): what a source URL handed
    /// to the service for a server-side copy carries, never the engine's full token.
    pub fn read_token(&self, now: DateTime<Utc>, lifetime: Duration) -> Secret {
        let p = SasParams {
            sp: "r".into(),
            srt: "o".into(),
            ..self.params(now, lifetime)
        };
        self.sign_query(p, now, lifetime).0
    }

    fn sign_query(
        &self,
        p: SasParams,
        now: DateTime<Utc>,
        lifetime: Duration,
    ) -> (Secret, DateTime<Utc>) {
        let sig = self.signature(&p);
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("sv", &p.sv)
            .append_pair("ss", &p.ss)
            .append_pair("srt", &p.srt)
            .append_pair("sp", &p.sp)
            .append_pair("st", &p.st)
            .append_pair("se", &p.se)
            .append_pair("spr", &p.spr)
            .append_pair("sig", &sig);
        let expiry = now + chrono::Duration::from_std(lifetime).unwrap_or_default();
        (Secret::new(q.finish()), expiry)
    }
}

/// The fields of an account SAS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasParams {
    /// Permissions.
    pub sp: String,
    /// Services.
    pub ss: String,
    /// Resource types.
    pub srt: String,
    /// Start.
    pub st: String,
    /// Expiry.
    pub se: String,
    /// IP range.
    pub sip: String,
    /// Protocols.
    pub spr: String,
    /// Version.
    pub sv: String,
    /// Encryption scope.
    pub ses: String,
}

enum SasSource {
    Fixed(Secret),
    Signed {
        signer: AccountSasSigner,
        lifetime: Duration,
        margin: Duration,
        current: Mutex<Option<(Secret, DateTime<Utc>)>>,
    },
}

/// A per-try pipeline policy that adds a SAS to each request's query string, re-signing a
/// self-signed one before it expires. The SDK's clients keep a clean URL.
pub struct SasPolicy {
    source: SasSource,
    signed_count: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for SasPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.source {
            SasSource::Fixed(_) => "fixed",
            SasSource::Signed { .. } => "signed",
        };
        f.debug_struct("SasPolicy")
            .field("kind", &kind)
            .field("sas", &"***")
            .finish()
    }
}

impl SasPolicy {
    /// A policy adding a fixed SAS.
    pub fn fixed(sas: Secret) -> Self {
        Self {
            source: SasSource::Fixed(sas),
            signed_count: Default::default(),
        }
    }

    /// A policy signing account SAS tokens with the default lifetime.
    pub fn signed(signer: AccountSasSigner) -> Self {
        Self::signed_with(signer, SAS_LIFETIME, SAS_RENEW_MARGIN)
    }

    /// A policy signing tokens valid for `lifetime`, renewed when less than `margin` is left.
    pub fn signed_with(signer: AccountSasSigner, lifetime: Duration, margin: Duration) -> Self {
        Self {
            source: SasSource::Signed {
                signer,
                lifetime,
                margin,
                current: Mutex::new(None),
            },
            signed_count: Default::default(),
        }
    }

    /// A token for a URL the *service* reads a blob by (a server-side copy's source): a
    /// read-only object token when the policy signs its own, the given SAS otherwise.
    pub fn read_only(&self, now: DateTime<Utc>) -> Secret {
        match &self.source {
            SasSource::Fixed(s) => s.clone(),
            SasSource::Signed {
                signer, lifetime, ..
            } => signer.read_token(now, *lifetime),
        }
    }

    /// How many tokens have been signed so far (renewal tests).
    pub fn signed_count(&self) -> u64 {
        self.signed_count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The token to use now (signing a new one if the current one is close to expiry).
    pub fn current(&self, now: DateTime<Utc>) -> Secret {
        match &self.source {
            SasSource::Fixed(s) => s.clone(),
            SasSource::Signed {
                signer,
                lifetime,
                margin,
                current,
            } => {
                let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
                let margin = chrono::Duration::from_std(*margin).unwrap_or_default();
                match &*cur {
                    Some((tok, exp)) if *exp - now > margin => tok.clone(),
                    _ => {
                        let (tok, exp) = signer.token(now, *lifetime);
                        self.signed_count
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        *cur = Some((tok.clone(), exp));
                        tok
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Policy for SasPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let sas = self.current(Utc::now());
        // Work on a copy so a retry of the same request does not append the SAS twice.
        let mut req = request.clone();
        {
            let url = req.url_mut();
            let merged = match url.query() {
                Some(q) if !q.is_empty() => format!("{q}&{}", sas.expose()),
                _ => sas.expose().to_string(),
            };
            url.set_query(Some(&merged));
        }
        next[0].send(ctx, &mut req, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::azure::builder::AzureTarget;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    fn target(s: &str) -> AzureTarget {
        AzureTarget::parse(&Secret::new(s), "backups").expect("target")
    }

    /// Known vector, computed independently with Python:
    ///
    /// ```text
    /// import hmac, hashlib, base64
    /// key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
    /// sts = "devstoreaccount1\nrwdlacutf\nb\nsco\n2024-01-01T00:00:00Z\n2024-01-01T08:00:00Z\n\nhttps,http\n2022-11-02\n\n"
    /// print(base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode())
    /// # → +hI807BUQnf+Bs/ErPaC0O84HJEJmGy6E6HzQhCyMhI=
    /// ```
    #[test]
    fn account_sas_signature_matches_independent_vector() {
        let s = AccountSasSigner::new("devstoreaccount1", &Secret::new(EMULATOR_KEY), true)
            .expect("key");
        let p = SasParams {
            sp: "rwdlacutf".into(),
            ss: "b".into(),
            srt: "sco".into(),
            st: "2024-01-01T00:00:00Z".into(),
            se: "2024-01-01T08:00:00Z".into(),
            sip: String::new(),
            spr: "https,http".into(),
            sv: "2022-11-02".into(),
            ses: String::new(),
        };
        assert!(s.string_to_sign(&p).ends_with("2022-11-02\n\n"));
        assert_eq!(
            s.signature(&p),
            "+hI807BUQnf+Bs/ErPaC0O84HJEJmGy6E6HzQhCyMhI="
        );
    }

    #[test]
    fn queue_sas_is_signed_for_the_queue_service() {
        let s = AccountSasSigner::new("devstoreaccount1", &Secret::new(EMULATOR_KEY), true)
            .expect("key")
            .for_services(SasServices::Queue);
        let p = s.params(Utc::now(), Duration::from_secs(3600));
        assert_eq!((p.ss.as_str(), p.sp.as_str()), ("q", "rwdlacup"));
        let (tok, _) = s.token(Utc::now(), Duration::from_secs(3600));
        assert!(tok.expose().contains("ss=q"));
        let t = target("http://127.0.0.1:10001/devstoreaccount1/runs");
        let c = resolve_for(&t, &env_of(&[]), SasServices::Queue).expect("emulator");
        let Resolved::Sas(pol) = c.resolved else {
            panic!("sas")
        };
        assert!(pol.current(Utc::now()).expose().contains("ss=q"));
    }

    #[test]
    fn a_source_url_token_only_reads_objects() {
        let s = AccountSasSigner::new("acct", &Secret::new(EMULATOR_KEY), false).expect("key");
        let pol = SasPolicy::signed(s);
        let now = Utc::now();
        let r = pol.read_only(now);
        let q: std::collections::BTreeMap<String, String> =
            url::form_urlencoded::parse(r.expose().as_bytes())
                .into_owned()
                .collect();
        assert_eq!((q["sp"].as_str(), q["srt"].as_str()), ("r", "o"), "{q:?}");
        assert_ne!(r.expose(), pol.current(now).expose());
        // A given SAS is what there is.
        let fixed = SasPolicy::fixed(Secret::new("sv=1&sp=rl&sig=GIVEN"));
        assert_eq!(fixed.read_only(now).expose(), "sv=1&sp=rl&sig=GIVEN");
    }

    #[test]
    fn signed_sas_is_renewed_before_expiry() {
        let s = AccountSasSigner::new("acct", &Secret::new(EMULATOR_KEY), false).expect("key");
        let pol = SasPolicy::signed_with(s, Duration::from_secs(7200), Duration::from_secs(3600));
        let t0 = Utc::now();
        let a = pol.current(t0);
        let b = pol.current(t0 + chrono::Duration::minutes(30));
        assert_eq!(a.expose(), b.expose(), "reused while far from expiry");
        assert_eq!(pol.signed_count(), 1);
        let c = pol.current(t0 + chrono::Duration::minutes(61));
        assert_ne!(a.expose(), c.expose(), "re-signed inside the renew margin");
        assert_eq!(pol.signed_count(), 2);
        assert!(!format!("{pol:?}").contains(a.expose()));
    }

    #[test]
    fn chain_order_and_sources() {
        let t = target("https://acct.blob.core.windows.net/cont?sv=1&sig=URLSIG");
        let key_env = env_of(&[("AZURE_STORAGE_KEY", EMULATOR_KEY)]);
        let c = resolve(&t, &key_env).expect("key");
        assert_eq!(c.kind, CredentialKind::AccountKey);
        assert_eq!(c.source, "AZURE_STORAGE_KEY");

        let none = env_of(&[]);
        let c = resolve(&t, &none).expect("sas");
        assert_eq!(c.kind, CredentialKind::Sas);
        assert_eq!(c.source, "SAS in the target URL");

        let t2 = target("azure://acct/cont");
        let sas_env = env_of(&[("AZURE_STORAGE_SAS_TOKEN", "?sv=1&sig=ENVSIG")]);
        let c = resolve(&t2, &sas_env).expect("sas env");
        assert_eq!(c.source, "AZURE_STORAGE_SAS_TOKEN");

        let mi = env_of(&[
            ("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"),
            ("IDENTITY_HEADER", "hdr"),
            ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000001"),
        ]);
        let c = resolve(&t2, &mi).expect("mi");
        assert_eq!(c.kind, CredentialKind::ManagedIdentity);
        assert!(c.source.contains("user-assigned"));

        let cs = env_of(&[
            ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000001"),
            ("AZURE_CLIENT_SECRET", "CLIENTS3CRET"),
        ]);
        let c = resolve(&t2, &cs).expect("client secret");
        assert_eq!(c.kind, CredentialKind::ClientSecret);
        assert!(!format!("{c:?}").contains("CLIENTS3CRET"));

        let cs_env = env_of(&[(
            "AZURE_STORAGE_CONNECTION_STRING",
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        )]);
        let c = resolve(&t2, &cs_env).expect("conn string");
        assert_eq!(c.source, "AccountKey in AZURE_STORAGE_CONNECTION_STRING");
    }

    #[test]
    fn nothing_found_lists_what_was_tried() {
        let t = target("azure://acct/cont");
        let e = resolve(&t, &env_of(&[])).expect_err("none");
        let m = e.to_string();
        for needle in [
            "AZURE_STORAGE_CONNECTION_STRING",
            "AZURE_STORAGE_KEY",
            "AZURE_STORAGE_SAS_TOKEN",
            "IDENTITY_ENDPOINT",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_CLIENT_SECRET",
            "Azure CLI",
        ] {
            assert!(m.contains(needle), "{needle} missing from: {m}");
        }
    }

    #[test]
    fn key_vault_takes_only_the_token_steps() {
        // A storage key does not authorize Key Vault: the error says what would.
        let env = env_of(&[("AZURE_STORAGE_KEY", "c2VjcmV0")]);
        let e = resolve_token("Key Vault key k", &env).expect_err("no token");
        assert_eq!(e.kind(), crate::error::ErrorKind::Config);
        for needle in [
            "Key Vault key k",
            "managed identity",
            "AZURE_CLIENT_SECRET",
            "az login",
        ] {
            assert!(e.to_string().contains(needle), "{needle} missing from: {e}");
        }
        assert!(!e.to_string().contains("c2VjcmV0"));
        let forced = env_of(&[("BLOBPIPE_AZURE_CREDENTIAL", "sas")]);
        let e = resolve_token("Key Vault key k", &forced).expect_err("forced sas");
        assert!(e.to_string().contains("forces a sas"), "{e}");
        // The same environment gives the store's token step.
        let mi = env_of(&[
            ("AZURE_STORAGE_KEY", "c2VjcmV0"),
            ("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ]);
        let c = resolve_token("Key Vault key k", &mi).unwrap();
        assert_eq!(c.kind, CredentialKind::ManagedIdentity);
        let cs = env_of(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
        ]);
        let c = resolve_token("Key Vault key k", &cs).unwrap();
        assert_eq!(c.kind, CredentialKind::ClientSecret);
        assert_eq!(
            c.kind,
            resolve(&target("azure://acct/cont"), &cs).unwrap().kind
        );
    }

    #[test]
    fn bad_key_does_not_leak() {
        let t = target("azure://acct/cont");
        let e = resolve(&t, &env_of(&[("AZURE_STORAGE_KEY", "not base64 S3CRET!!")]))
            .expect_err("bad key");
        assert!(!e.to_string().contains("S3CRET"));
    }

    #[test]
    fn tokens_need_https_and_forcing_works() {
        let t = target("http://127.0.0.1:10000/devstoreaccount1/cont");
        let c = resolve(&t, &env_of(&[])).expect("emulator fallback");
        assert_eq!(c.kind, CredentialKind::EmulatorKey);
        let e = resolve(
            &t,
            &env_of(&[("BLOBPIPE_AZURE_CREDENTIAL", "managed-identity")]),
        )
        .expect_err("http");
        assert!(e.to_string().contains("https"));
        let e = resolve(&t, &env_of(&[("BLOBPIPE_AZURE_CREDENTIAL", "bogus")])).expect_err("bad");
        assert_eq!(e.kind(), crate::ErrorKind::Config);
    }
}
