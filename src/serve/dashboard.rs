//! `GET /dashboard/`: the HTML dashboard of [`crate::report`], read-only, from the store
//! at request time (the same pages `blobpipe report --html` writes).
//!
//! Never anonymous by default: [`Access::Off`] answers 404. [`Access::EasyAuth`] serves
//! only requests that carry `X-MS-CLIENT-PRINCIPAL-ID`, the header App Service and
//! Container Apps authentication ("Easy Auth", with Entra ID as provider) adds after
//! signing the user in — and strips from what clients send — so the app must be reachable
//! only through that front door (ingress with authentication required; the port not
//! published otherwise). [`Access::Anonymous`] is for loopback or a private network.
//! Only GET/HEAD are routed here; nothing on these pages changes state.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use super::{respond, App};
use crate::report::{self, ReportOptions};

/// Who may see the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Not served (404).
    #[default]
    Off,
    /// Requests let through by Easy Auth (they carry `X-MS-CLIENT-PRINCIPAL-ID`).
    EasyAuth,
    /// Anyone who reaches the port.
    Anonymous,
}

/// The header Easy Auth sets to the signed-in principal's object id.
pub const PRINCIPAL_ID: &str = "x-ms-client-principal-id";
/// The header Easy Auth sets to the principal's name.
pub const PRINCIPAL_NAME: &str = "x-ms-client-principal-name";

/// What the pages allow the browser to load: nothing but their own inline styles.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Answer `path` (`dashboard`, `dashboard/`, `dashboard/<page>.html`).
pub(super) async fn handle(
    app: &Arc<App>,
    headers: &HeaderMap,
    path: &str,
) -> Response<Full<Bytes>> {
    match app.dashboard {
        Access::Off => {
            return respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "the dashboard is off: start serve with --dashboard easy-auth (behind Entra ID \
                 authentication) or --dashboard anonymous (loopback or a private network); \
                 see docs/dashboard.md\n",
            )
        }
        Access::EasyAuth => {
            let who = headers
                .get(PRINCIPAL_ID)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.trim().is_empty());
            let Some(id) = who else {
                return respond(
                    StatusCode::UNAUTHORIZED,
                    "text/plain",
                    "sign-in required: this dashboard is served only through App Service / \
                     Container Apps authentication (Entra ID)\n",
                );
            };
            let name = headers
                .get(PRINCIPAL_NAME)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info!(principal_id = %id, principal = %name, page = %path, "dashboard request");
        }
        Access::Anonymous => {}
    }
    if path == "dashboard" {
        // Relative links need the trailing slash.
        let mut r = respond(
            StatusCode::PERMANENT_REDIRECT,
            "text/plain",
            "see /dashboard/\n",
        );
        r.headers_mut().insert(
            hyper::header::LOCATION,
            HeaderValue::from_static("/dashboard/"),
        );
        return r;
    }
    let page = path.trim_start_matches("dashboard/");
    let page = if page.is_empty() { "index.html" } else { page };
    let opts = ReportOptions::default();
    let wanted: Vec<_> = if page == "index.html" {
        app.pipelines
            .values()
            .map(|p| (p.file.clone(), Ok(p.clone())))
            .collect()
    } else {
        match app
            .pipelines
            .values()
            .find(|p| report::page_name(&p.name) == page)
        {
            Some(p) => vec![(p.file.clone(), Ok(p.clone()))],
            None => return respond(StatusCode::NOT_FOUND, "text/plain", "no such page\n"),
        }
    };
    let site = report::gather(wanted, opts).await;
    let Some((_, html)) = report::html::pages(&site)
        .into_iter()
        .find(|(n, _)| n == page)
    else {
        return respond(StatusCode::NOT_FOUND, "text/plain", "no such page\n");
    };
    let mut r = respond(StatusCode::OK, report::HTML, html);
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
