//! Secrets as a type.
//!
//! Keys, SAS tokens, passwords and connection strings live in [`Secret`], whose `Debug`
//! and `Display` print `***`. The only way to the value is [`Secret::expose`], which makes
//! every place that handles the raw value easy to find. [`redact_url`] strips query
//! strings (where SAS tokens live) and user-info from URLs before they reach a message.

use std::fmt;

/// A string that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value. Call only where the value is sent to its consumer.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A URL safe to print: query string (SAS), fragment and user-info replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (base, had_query) = match url.find(['?', '#']) {
        Some(i) => (&url[..i], true),
        None => (url, false),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &base[..s], &base[at + 1..]),
        _ => base.to_string(),
    };
    if had_query {
        format!("{base}?***")
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("sv=2024&sig=abcdef");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("abcdef"));
        assert_eq!(s.expose(), "sv=2024&sig=abcdef");
    }

    #[test]
    fn urls_lose_query_and_userinfo() {
        assert_eq!(
            redact_url("https://acct.blob.core.windows.net/c?sv=1&sig=SECRET"),
            "https://acct.blob.core.windows.net/c?***"
        );
        assert_eq!(
            redact_url("postgres://u:pw@host/db"),
            "postgres://***@host/db"
        );
        assert_eq!(redact_url("file:///tmp/x"), "file:///tmp/x");
    }
}
