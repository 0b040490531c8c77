//! Managed identity as Container Apps and App Service/Functions provide it
//! (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`): the credential chain picks it, and the
//! token request it sends carries what the real endpoint requires — `GET`,
//! `api-version=2019-08-01`, `resource` (the scope without `/.default`), `client_id` for
//! a user-assigned identity, and the `X-IDENTITY-HEADER` secret — against a loopback
//! stand-in. One test per binary: it sets process environment variables.

mod ops_support;

use blobpipe::store::azure::builder::AzureTarget;
use blobpipe::store::azure::credential::{self, CredentialKind, Resolved};
use blobpipe::support::secret::Secret;
use ops_support::Receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_request_matches_the_identity_endpoint_contract() {
    blobpipe::support::http::ensure_tls_provider();
    let expires = chrono::Utc::now().timestamp() + 3600;
    let body: &'static str = Box::leak(
        format!(
            "{{\"access_token\":\"stand-in-token\",\"expires_on\":\"{expires}\",\"resource\":\"https://storage.azure.com\",\"token_type\":\"Bearer\",\"client_id\":\"cid-123\"}}"
        )
        .into_boxed_str(),
    );
    let rx = Receiver::start(vec![200], body).await;
    let endpoint = format!("{}/msi/token", rx.base);
    for k in [
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "BLOBPIPE_AZURE_CREDENTIAL",
        "AZURE_FEDERATED_TOKEN_FILE",
    ] {
        std::env::remove_var(k);
    }
    std::env::set_var("IDENTITY_ENDPOINT", &endpoint);
    std::env::set_var("IDENTITY_HEADER", "hdr-secret-42");
    std::env::set_var("AZURE_CLIENT_ID", "cid-123");

    let target = AzureTarget::parse(
        &Secret::new("https://acct.blob.core.windows.net/"),
        "backups",
    )
    .unwrap();
    let chosen = credential::resolve(&target, &credential::process_env).unwrap();
    assert_eq!(chosen.kind, CredentialKind::ManagedIdentity);
    assert!(
        chosen.source.contains("IDENTITY_ENDPOINT"),
        "{}",
        chosen.source
    );
    assert!(!format!("{chosen:?}").contains("hdr-secret-42"));
    let Resolved::Token(cred) = chosen.resolved else {
        panic!("managed identity must resolve to a token credential");
    };
    let tok = cred
        .get_token(&["https://storage.azure.com/.default"], None)
        .await
        .unwrap();
    assert_eq!(tok.token.secret(), "stand-in-token");

    let got = rx.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    let r = &got[0];
    assert_eq!(r.method, "GET");
    let url = url::Url::parse(&format!("http://x{}", r.target)).unwrap();
    assert_eq!(url.path(), "/msi/token");
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q.get("api-version").map(String::as_str), Some("2019-08-01"));
    assert_eq!(
        q.get("resource").map(String::as_str),
        Some("https://storage.azure.com")
    );
    assert_eq!(q.get("client_id").map(String::as_str), Some("cid-123"));
    assert_eq!(r.header("x-identity-header"), Some("hdr-secret-42"));
}
