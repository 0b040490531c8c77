//! `[compression]`, `[target]`, `[upload]` and `[retry]`: the way to the store, checked
//! into the pack and store stages' own config types.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::check::{pos_count, size_in, Checker};
use super::raw::{CompressionSpec, RetrySpec, TargetSpec, UploadSpec};
use crate::manifest::codec::Codec;
use crate::pack::codec::CompressionConfig;
use crate::store::azure::builder::{looks_like_azure, AzureTarget};
use crate::store::config::{RetryConfig, StoreLocation, TargetConfig, UploadConfig};
use crate::store::Tier;
use crate::support::secret::{redact_url, Secret};
use crate::support::units::parse_duration;

/// `[compression]`: codec (default zstd), a level valid for it, the frame size.
pub(super) fn check_compression(c: &mut Checker<'_>, s: &CompressionSpec) -> CompressionConfig {
    let codec = match &s.codec {
        None => Codec::Zstd,
        Some(v) => match v.get_ref().as_str() {
            "gzip" | "gz" => Codec::Gzip,
            "zstd" | "zst" => Codec::Zstd,
            other => {
                c.at(
                    v.span(),
                    "compression.codec",
                    format!("unknown codec {other:?}"),
                    "use \"gzip\" or \"zstd\"",
                );
                Codec::Zstd
            }
        },
    };
    let (lmin, lmax, ldef) = match codec {
        Codec::Gzip => (0, 9, 6),
        Codec::Zstd => (1, 22, 3),
        Codec::Stored => (0, 0, 0),
    };
    let level = match &s.level {
        None => ldef,
        Some(v) if (lmin..=lmax).contains(v.get_ref()) => *v.get_ref() as i32,
        Some(v) => {
            c.at(
                v.span(),
                "compression.level",
                format!(
                    "{} level must be {lmin}–{lmax}, got {}",
                    codec.as_str(),
                    v.get_ref()
                ),
                "",
            );
            ldef
        }
    };
    let frame_size = size_in(
        c,
        &s.frame_size,
        "compression.frame_size",
        1 << 20,
        64 << 10,
        crate::manifest::check::MAX_FRAME as usize,
    );
    CompressionConfig {
        codec,
        level,
        frame_size,
    }
}

/// `[target]`: the store URL (interpolated), container, prefix (default: the pipeline
/// name) and access tier of packs.
///
/// An Azure target string is parsed here, once, so a bad one is a located error and the
/// printable rendering ([`TargetConfig::display_url`]) is the redacted
/// `azure://account/container (credential kind)` of the parsed target. No message built
/// here contains the target string itself: it may carry an account key or a SAS.
pub(super) fn check_target(
    c: &mut Checker<'_>,
    t: &TargetSpec,
    name: &str,
    base: &Path,
) -> TargetConfig {
    let url = c.interp(&t.url, "target.url");
    if url.trim().is_empty() && !c.errors.iter().any(|e| e.contains("target.url")) {
        c.at(
            t.url.span(),
            "target.url",
            "is empty",
            "give a store URL such as file:///var/backups or azure://account/container",
        );
    }
    let mut container = match &t.container {
        Some(v) => {
            let s = c.interp(v, "target.container");
            let ok = (3..=63).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
                && !s.contains("--");
            if !ok {
                c.at(
                    v.span(),
                    "target.container",
                    format!("invalid container name {s:?}"),
                    "use 3–63 characters of a–z, 0–9 and single '-' (Azure container rules)",
                );
            }
            s
        }
        None => "backups".to_string(),
    };
    let (location, display_url) = if let Some(rest) = url.strip_prefix("file://") {
        let p = PathBuf::from(rest);
        (
            StoreLocation::Local(if p.is_absolute() { p } else { base.join(p) }),
            redact_url(&url),
        )
    } else if let Some(rest) = url.strip_prefix("memory://") {
        (StoreLocation::Memory(rest.to_string()), redact_url(&url))
    } else if looks_like_azure(&url) {
        let secret = Secret::new(url.clone());
        match AzureTarget::parse(&secret, &container) {
            Ok(a) => {
                // A container named by the URL wins over `target.container`.
                container.clone_from(&a.container);
                (StoreLocation::Azure(secret), a.summary())
            }
            Err(e) => {
                // The parser's messages are redacted (they never quote the string).
                c.at(
                    t.url.span(),
                    "target.url",
                    e.message(),
                    "see docs/azure.md for the accepted target forms",
                );
                (StoreLocation::Memory(String::new()), String::new())
            }
        }
    } else {
        if !url.is_empty() {
            let shown = match url.find("://") {
                Some(i) => format!("scheme {:?}", &url[..i + 3]),
                None => "(value not shown: it may hold a secret)".to_string(),
            };
            c.at(
                t.url.span(),
                "target.url",
                format!("unsupported store URL {shown}"),
                "use file:///abs/dir, file://relative/dir, azure://account/container, \
                 https://account.blob.core.windows.net/container or an Azure connection string",
            );
        }
        (StoreLocation::Memory(String::new()), String::new())
    };
    let prefix = match &t.prefix {
        Some(v) => {
            let s = c.interp(v, "target.prefix");
            let s = s.trim_matches('/').to_string();
            if s.split('/')
                .any(|seg| !crate::support::ids::is_safe_segment(seg))
            {
                c.at(
                    v.span(),
                    "target.prefix",
                    format!("invalid prefix {s:?}"),
                    "use '/'-separated segments of letters, digits, '-', '_' and '.'",
                );
            }
            s
        }
        None => name.to_string(),
    };
    let tier = match &t.tier {
        None => Tier::Hot,
        Some(v) => Tier::parse(v.get_ref()).unwrap_or_else(|| {
            c.at(
                v.span(),
                "target.tier",
                format!("unknown access tier {:?}", v.get_ref()),
                "use \"hot\", \"cool\", \"cold\" or \"archive\"",
            );
            Tier::Hot
        }),
    };
    TargetConfig {
        location,
        display_url,
        container,
        prefix,
        tier,
    }
}

/// `[upload]`: block and pack sizes, concurrency and the sealed-block channel.
pub(super) fn check_upload(c: &mut Checker<'_>, s: &UploadSpec) -> UploadConfig {
    let block_size = size_in(
        c,
        &s.block_size,
        "upload.block_size",
        8 << 20,
        64 << 10,
        4000 << 20,
    );
    let pack_size = size_in(
        c,
        &s.pack_size,
        "upload.pack_size",
        256 << 20,
        1 << 20,
        1 << 40,
    ) as u64;
    UploadConfig {
        block_size,
        pack_size,
        concurrency: pos_count(c, &s.concurrency, "upload.concurrency", 4, 256),
        channel_capacity: pos_count(c, &s.channel_capacity, "upload.channel_capacity", 4, 1024),
    }
}

/// `[retry]`: attempts and backoffs of store calls; `initial_backoff ≤ max_backoff`.
pub(super) fn check_retry(c: &mut Checker<'_>, s: &RetrySpec) -> RetryConfig {
    let d = RetryConfig::default();
    let dur = |c: &mut Checker<'_>, v: &Option<Spanned<String>>, key: &str, def: Duration| match v {
        None => def,
        Some(v) => match parse_duration(v.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                c.at(v.span(), key, e, "");
                def
            }
        },
    };
    let retry = RetryConfig {
        attempts: pos_count(c, &s.attempts, "retry.attempts", d.attempts as usize, 100) as u32,
        initial_backoff: dur(
            c,
            &s.initial_backoff,
            "retry.initial_backoff",
            d.initial_backoff,
        ),
        max_backoff: dur(c, &s.max_backoff, "retry.max_backoff", d.max_backoff),
        budget: dur(c, &s.budget, "retry.budget", d.budget),
    };
    if retry.initial_backoff > retry.max_backoff {
        if let Some(v) = &s.initial_backoff {
            c.at(
                v.span(),
                "retry.initial_backoff",
                "is larger than retry.max_backoff",
                "make initial_backoff ≤ max_backoff",
            );
        }
    }
    retry
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{parse, GOOD};

    #[test]
    fn bad_size_is_located() {
        let text = format!("{GOOD}[upload]\nblock_size = \"8 parsecs\"\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(":10:"), "{e}");
        assert!(e.contains("upload.block_size"), "{e}");
        assert!(e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn out_of_range_size_and_wrong_type() {
        let e = parse(&format!("{GOOD}[upload]\nblock_size = \"1KiB\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("upload.block_size") && e.contains("out of range"),
            "{e}"
        );
        let e = parse(&format!("{GOOD}[upload]\nconcurrency = \"four\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("upload.concurrency"), "{e}");
    }

    #[test]
    fn empty_url_or_root_is_an_error_not_a_default() {
        std::env::set_var("BP_TEST_EMPTY", "");
        let e = parse(&GOOD.replace("file://store", "${BP_TEST_EMPTY}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("target.url") && e.contains("BP_TEST_EMPTY"),
            "{e}"
        );
        let e = parse(&GOOD.replace("file://store", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("target.url") && e.contains("is empty"), "{e}");
        let e = parse(&GOOD.replace("root = \"data\"", "root = \"\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.root") && e.contains("is empty"), "{e}");
    }

    #[test]
    fn secrets_in_url_are_not_echoed() {
        let text = GOOD.replace("file://store", "ftp://host/c?sig=TOPSECRET");
        let e = parse(&text).unwrap_err().to_string();
        assert!(!e.contains("TOPSECRET"), "{e}");
        // Not URL-shaped, not a connection string: nothing of it is shown.
        let text = GOOD.replace("file://store", "Secret=TOPSECRET;Other=1");
        let e = parse(&text).unwrap_err().to_string();
        assert!(!e.contains("TOPSECRET"), "{e}");
        // A connection string the Azure parser refuses: located, and still redacted.
        let text = GOOD.replace(
            "file://store",
            "AccountName=acct;AccountKey=TOPSECRET;DefaultEndpointsProtocol=http",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("target.url"), "{e}");
        assert!(!e.contains("TOPSECRET"), "{e}");
    }

    #[test]
    fn azure_targets_render_redacted_with_their_credential_kind() {
        let text = GOOD.replace(
            "file://store",
            "BlobEndpoint=https://prodacct.blob.core.windows.net;SharedAccessSignature=sv=2024&sig=TOPSECRET",
        );
        let p = parse(&text).expect("the documented BlobEndpoint+SAS form is accepted");
        assert_eq!(p.target.display_url, "azure://prodacct/backups (SAS)");
        let text = GOOD.replace(
            "file://store",
            "DefaultEndpointsProtocol=https;AccountName=prodacct;AccountKey=TOPSECRET==",
        );
        let p = parse(&text).expect("account key form");
        assert_eq!(
            p.target.display_url,
            "azure://prodacct/backups (account key)"
        );
        assert!(!format!("{:?}", p.target).contains("TOPSECRET"));
        let p = parse(&GOOD.replace(
            "file://store",
            "https://prodacct.blob.core.windows.net/named?sv=1&sig=TOPSECRET",
        ))
        .expect("https with SAS");
        assert_eq!(p.target.display_url, "azure://prodacct/named (SAS)");
        assert_eq!(p.target.container, "named", "the URL's container wins");
    }
}
