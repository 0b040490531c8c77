//! The library's one public error type.
//!
//! Every fallible public function returns [`Error`]: a [`ErrorKind`] that callers (and
//! the binary's exit code) branch on, a human context chain ("backing up partition 3:
//! staging block 12 of packs/ab/ab12…: …"), and a mark saying whether retrying the same
//! operation could help. Module-level errors convert into it at the module boundary.
//!
//! Errors never carry secrets: anything built from a URL or a credential goes through
//! [`crate::support::secret`] redaction before it reaches a message.

use std::fmt;

/// What went wrong, coarsely: enough to pick an exit code or a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The pipeline file or the command line is wrong; nothing was run.
    Config,
    /// The source could not be read (a directory, a database, a command).
    Source,
    /// The store failed (network, service, disk).
    Store,
    /// Something asked for does not exist (snapshot, path, blob).
    NotFound,
    /// A create-only write met different existing content.
    Conflict,
    /// Stored data does not match its recorded hash or size.
    Integrity,
    /// Another run holds the pipeline's lock.
    Locked,
    /// The blob is in the Archive tier and must be rehydrated before reading.
    Archived,
    /// The run was cancelled (Ctrl-C / SIGTERM).
    Cancelled,
    /// Restore refused to do something unsafe (escape the target, overwrite).
    Refused,
    /// A bug or an impossible state.
    Internal,
}

/// The library's error: kind, context chain, retryability, optional source.
pub struct Error {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new permanent error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable: false,
            source: None,
        }
    }

    /// A new error that a retry of the same operation may cure.
    pub fn transient(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            ..Self::new(kind, message)
        }
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Prefix the message with what was being done ("restoring a/b: …").
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// The coarse kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the same operation may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The message without the source chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Shorthand constructors.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    /// See [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// See [`ErrorKind::Integrity`].
    pub fn integrity(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Integrity, message)
    }
    /// See [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// See [`ErrorKind::Refused`].
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Refused, message)
    }
    /// See [`ErrorKind::Cancelled`].
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "cancelled")
    }

    /// An I/O error on a local path, classified: missing → NotFound, others → `kind`.
    pub fn io(kind: ErrorKind, what: impl fmt::Display, err: std::io::Error) -> Self {
        let k = if err.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            kind
        };
        let retryable = matches!(
            err.kind(),
            std::io::ErrorKind::Interrupted
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::WouldBlock
        );
        Self {
            kind: k,
            message: format!("{what}: {err}"),
            retryable,
            source: None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(src) = &self.source {
            write!(f, ": {src}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("retryable", &self.retryable)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::integrity(format!("malformed JSON record: {e}"))
    }
}

/// Adds `.ctx("doing X")` to any `Result<T, Error>`.
pub trait ResultExt<T> {
    /// Prefix the error message with what was being done.
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_chains_and_kind_survives() {
        let e = Error::transient(ErrorKind::Store, "503 Server Busy")
            .context("staging block 3")
            .context("partition 1");
        assert_eq!(
            e.to_string(),
            "partition 1: staging block 3: 503 Server Busy"
        );
        assert_eq!(e.kind(), ErrorKind::Store);
        assert!(e.is_retryable());
    }

    #[test]
    fn io_not_found_is_classified() {
        let e = Error::io(
            ErrorKind::Source,
            "reading x",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
