"""Exceptions the provider raises, one per outcome a DAG may want to tell apart.

Outcomes where a retry cannot help derive from ``AirflowFailException`` (the task fails
without using its retries); the others from ``AirflowException`` (retries apply).
"""

from __future__ import annotations

from typing import Any

from airflow.exceptions import AirflowException, AirflowFailException

from blobpipe_airflow.exit_codes import Outcome


class BlobpipeError(AirflowException):
    """A blobpipe command did not succeed. ``outcome`` says how it ended."""

    def __init__(self, message: str, outcome: Outcome, report: Any = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        #: The command's JSON document, when it printed one.
        self.report = report


class BlobpipeRetryableError(BlobpipeError):
    """Failed, locked, cancelled or unknown: the task's retries apply (same run id)."""


class BlobpipeFatalError(BlobpipeError, AirflowFailException):
    """Config, not found, refused, archived: retrying the same command cannot help."""


class BlobpipePartialError(BlobpipeFatalError):
    """Committed, but some source files could not be read or kept changing (exit 4)."""


class BlobpipeMismatchError(BlobpipeFatalError):
    """Verification (or a restore or drill) found data that does not match its hashes (3)."""


def error_for(outcome: Outcome, what: str, report: Any = None) -> BlobpipeError:
    """The exception for an unsuccessful ``outcome`` of ``what`` (e.g. ``backup home``)."""
    detail = ""
    if isinstance(report, dict):
        err = report.get("error")
        if isinstance(err, str) and err:
            detail = f": {err}"
    message = f"{what}: exit {outcome.code} ({outcome.name}): {outcome.meaning}{detail}"
    cls: type[BlobpipeError]
    if outcome.name == "partial":
        cls = BlobpipePartialError
    elif outcome.name == "mismatch":
        cls = BlobpipeMismatchError
    elif outcome.retryable:
        cls = BlobpipeRetryableError
    else:
        cls = BlobpipeFatalError
    return cls(message, outcome, report)
