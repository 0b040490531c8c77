//! The library's one public error type.
//!
//! Every fallible public function returns [`Error`]: an [`ErrorKind`] that callers (and
//! the binary's exit code, see `cli::exit`) branch on, a context chain ("backing up
//! partition 3: staging block 12 of packs/ab/ab12…: …") kept as frames rather than a
//! pre-joined string, and a mark saying whether retrying the same operation could help.
//! Module-level errors convert into it at the module boundary.
//!
//! The underlying cause (an `io::Error`, a driver or JSON error) is kept as the
//! [`std::error::Error::source`], so callers can walk the chain or downcast. `Display`
//! prints the frames, the message and the cause's text once, in that order — the same
//! "ctx2: ctx1: message: cause" line the CLI has always printed.
//!
//! Errors never carry secrets: anything built from a URL or a credential goes through
//! [`crate::support::secret`] redaction before it reaches a message. Sources whose own
//! `Display` may embed a URL with a SAS (SDK and HTTP client errors) are therefore rendered
//! into the message through that redaction and *not* attached raw; only sources whose text
//! is safe (local I/O, database drivers, JSON) are attached.

use std::fmt;

/// What went wrong, coarsely: enough to pick an exit code or a retry.
///
/// `Display` (and serde) print the variant's name ("Config", "NotFound", …): the spelling
/// the `--json` output (`"kind"`) and stored drill records (`"error_kind"`) have always used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The pipeline file or the command line is wrong; nothing was run.
    Config,
    /// The source could not be read (a directory, a database, a command).
    Source,
    /// The store failed (network, service, disk).
    Store,
    /// The database a restore writes into failed (`restore --to-db`, a drill's scratch
    /// database): unreachable, refused the login, or rejected a statement. Not the backup's
    /// source, which may be long gone.
    Destination,
    /// Something asked for does not exist (snapshot, path, blob).
    NotFound,
    /// A create-only write met different existing content.
    Conflict,
    /// Stored or received data is wrong: it does not match its recorded hash or size, or
    /// it does not decode (a malformed manifest, record or message).
    Integrity,
    /// A value could not be serialized (a bug, not bad data: never "mismatch").
    Encode,
    /// Another run holds the pipeline's lock.
    Locked,
    /// The blob is in the Archive tier and must be rehydrated before reading.
    Archived,
    /// The run was cancelled (Ctrl-C / SIGTERM).
    Cancelled,
    /// Restore refused to do something unsafe (escape the target, overwrite).
    Refused,
    /// The blob is under an immutability policy or a legal hold (`[immutability]`): the
    /// store refuses to delete or overwrite it until the policy expires.
    Immutable,
    /// The encryption key given does not open the pipeline's data key (`[encryption]`):
    /// a wrong key file, passphrase or vault key. Nothing was read or written with it.
    WrongKey,
    /// A bug or an impossible state.
    Internal,
}

impl ErrorKind {
    /// The stable name printed in JSON output and stored records.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "Config",
            ErrorKind::Source => "Source",
            ErrorKind::Store => "Store",
            ErrorKind::Destination => "Destination",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::Integrity => "Integrity",
            ErrorKind::Encode => "Encode",
            ErrorKind::Locked => "Locked",
            ErrorKind::Archived => "Archived",
            ErrorKind::Cancelled => "Cancelled",
            ErrorKind::Refused => "Refused",
            ErrorKind::Immutable => "Immutable",
            ErrorKind::WrongKey => "WrongKey",
            ErrorKind::Internal => "Internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The library's error: kind, context frames, message, cause, retryability.
pub struct Error {
    kind: ErrorKind,
    retryable: bool,
    /// What failed, without context or cause.
    message: String,
    /// Context frames, innermost first (the order they were added).
    context: Vec<String>,
    /// The cause as it is printed (already redacted or condensed by the constructor).
    cause: Option<String>,
    /// The cause itself, for `source()` and downcasting; never printed directly.
    source: Option<Source>,
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new permanent error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            retryable: false,
            message: message.into(),
            context: Vec::new(),
            cause: None,
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

    /// A permanent error of `kind` caused by `source`: prints "`what`: `source`".
    ///
    /// Only for sources whose `Display` carries no secret; render others through
    /// redaction into the message instead.
    pub fn caused(
        kind: ErrorKind,
        what: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let text = source.to_string();
        Self::new(kind, what.to_string()).with_cause(text, source)
    }

    /// Attach the underlying cause, printed as `text` after the message (`text` is what
    /// the caller chose to show of it: condensed, or redacted).
    pub fn with_cause(
        mut self,
        text: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.cause = Some(text.into());
        self.source = Some(Box::new(source));
        self
    }

    /// The same error with another kind (context, cause and source kept).
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Mark the error as one a retry may cure.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// Add what was being done ("restoring a/b"); printed before what is already there.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.context.push(what.to_string());
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

    /// The message without context frames or the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The context frames, outermost first (the order `Display` prints them).
    pub fn frames(&self) -> impl Iterator<Item = &str> {
        self.context.iter().rev().map(String::as_str)
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

    /// Stored or received JSON that does not decode ([`ErrorKind::Integrity`]).
    pub fn decode(what: impl fmt::Display, err: serde_json::Error) -> Self {
        Self::caused(ErrorKind::Integrity, what, err)
    }

    /// A value that could not be encoded ([`ErrorKind::Encode`]: a bug, exit 1, not a
    /// verification mismatch).
    pub fn encode(what: impl fmt::Display, err: serde_json::Error) -> Self {
        Self::caused(ErrorKind::Encode, what, err)
    }

    /// An I/O error on a local path, classified: missing → NotFound, others → `kind`;
    /// interrupted or timed-out operations are retryable. The io::Error is the source.
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
            retryable,
            ..Self::caused(k, what, err)
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for frame in self.frames() {
            write!(f, "{frame}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    /// Like `Display`, field by field; the source is shown only by its printed text
    /// (`cause`), never by its own `Debug`, which could hold unredacted detail.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("retryable", &self.retryable)
            .field("context", &self.frames().collect::<Vec<_>>())
            .field("message", &self.message)
            .field("cause", &self.cause)
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

/// `?` on a JSON *decode* (the common case: reading a stored record back). Encoders call
/// [`Error::encode`] instead, so a serialization bug is not reported as a mismatch.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::decode("malformed JSON record", e)
    }
}

/// Adds `.ctx("doing X")` to any `Result<T, Error>`.
pub trait ResultExt<T> {
    /// Add what was being done as a context frame.
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(what))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

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
        assert_eq!(
            e.frames().collect::<Vec<_>>(),
            ["partition 1", "staging block 3"]
        );
        assert_eq!(e.message(), "503 Server Busy");
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

    #[test]
    fn io_source_is_attached_and_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = Error::io(ErrorKind::Source, "reading x", io).context("partition 0");
        assert_eq!(e.to_string(), "partition 0: reading x: denied");
        assert_eq!(e.message(), "reading x");
        let src = e.source().expect("source attached");
        let io = src.downcast_ref::<std::io::Error>().expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        assert_eq!(e.to_string().matches("denied").count(), 1);
    }

    #[test]
    fn json_decode_is_integrity_and_encode_is_not() {
        let bad = serde_json::from_str::<u32>("x").unwrap_err();
        let e: Error = bad.into();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert!(e.to_string().starts_with("malformed JSON record: "), "{e}");
        assert!(e.source().is_some());
        let mut m = std::collections::HashMap::new();
        m.insert(vec![1u8], 1);
        let enc = serde_json::to_string(&m).unwrap_err();
        let e = Error::encode("encoding the report", enc);
        assert_eq!(e.kind(), ErrorKind::Encode);
    }

    #[test]
    fn kind_display_is_the_json_name() {
        assert_eq!(ErrorKind::NotFound.to_string(), "NotFound");
        assert_eq!(
            serde_json::to_string(&ErrorKind::Integrity).unwrap(),
            "\"Integrity\""
        );
        assert_eq!(
            format!("{:?}", ErrorKind::Config),
            ErrorKind::Config.as_str()
        );
    }
}
