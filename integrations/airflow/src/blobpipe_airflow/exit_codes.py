"""blobpipe's exit codes as data: what each one means for an Airflow task.

The codes are blobpipe's interface (``docs/exit-codes.md``, ``src/cli/exit.rs``). This
module is the one table from a code to an :class:`Outcome`; everything else in the
provider asks :func:`outcome_for`. A code the table does not know (a newer blobpipe) is a
failure whose message names the code, and a retry is allowed, so that an unknown outcome
never passes silently and never blocks a resumable run. To teach the provider a new code,
add one row to :data:`EXIT_CODES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Outcome:
    """How a blobpipe command ended, as a task sees it."""

    code: int
    #: Short name, as in ``docs/exit-codes.md`` (``ok``, ``partial``, ``mismatch`` ...).
    name: str
    #: The task succeeds.
    success: bool
    #: A retry of the task can help (blobpipe resumes the same ``--run-id``). When False
    #: the task fails at once: retrying a committed partial or mismatched run would find
    #: the snapshot committed and exit 0, hiding the problem.
    retryable: bool
    #: One line for the task log and the exception message.
    meaning: str


def _table(*rows: Outcome) -> Mapping[int, Outcome]:
    return MappingProxyType({r.code: r for r in rows})


#: Every exit code blobpipe documents. Extend here when blobpipe adds one.
EXIT_CODES: Mapping[int, Outcome] = _table(
    Outcome(0, "ok", True, False, "success"),
    Outcome(1, "failed", False, True, "the run failed; nothing committed (a retry resumes it)"),
    Outcome(2, "config", False, False, "usage or pipeline-file error; nothing was run"),
    Outcome(3, "mismatch", False, False, "verification found a mismatch"),
    Outcome(
        4,
        "partial",
        False,
        False,
        "committed, but some source files could not be read or kept changing",
    ),
    Outcome(5, "locked", False, True, "another run holds the pipeline's lock"),
    Outcome(6, "not_found", False, False, "no such snapshot, path or source root"),
    Outcome(7, "refused", False, False, "restore would overwrite or escape its target"),
    Outcome(8, "archived", False, False, "data is in the Archive tier: rehydrate first"),
    Outcome(9, "stale", False, True, "the newest verified snapshot is older than allowed"),
    Outcome(
        10,
        "unverified",
        False,
        True,
        "committed, but the verification after the commit could not complete"
        " (a retry with the same run id verifies it)",
    ),
    Outcome(
        11,
        "wrong_key",
        False,
        False,
        "[encryption]: the key given does not open the pipeline's data key;"
        " nothing was read or written",
    ),
    Outcome(101, "panic", False, False, "blobpipe panicked (a bug: report it with the log)"),
    Outcome(130, "cancelled", False, True, "stopped by a signal; resumable with the same run id"),
    Outcome(143, "terminated", False, True, "ended by SIGTERM"),
)

#: Run states as ``blobpipe serve`` reports them (``"state"``) and run records store
#: them (``"status"``), mapped to the exit code the same outcome has on the command line.
STATE_CODES: Mapping[str, int] = MappingProxyType(
    {
        "ok": 0,
        "failed": 1,
        "mismatch": 3,
        "partial": 4,
        "locked": 5,
        "cancelled": 130,
        "committed_unverified": 10,
    }
)

#: States of a run that has not ended yet.
PENDING_STATES = frozenset({"queued", "running"})


def outcome_for(code: int) -> Outcome:
    """The outcome of exit code ``code``; unknown codes are retryable failures."""
    known = EXIT_CODES.get(code)
    if known is not None:
        return known
    return Outcome(
        code,
        "unknown",
        False,
        True,
        f"unknown blobpipe exit code {code} (newer than this provider?): treated as a failure",
    )


def outcome_for_state(state: str) -> Outcome:
    """The outcome of a finished run in state ``state`` (``serve``'s / a run record's).

    An unknown state is a failure that names the state.
    """
    code = STATE_CODES.get(state)
    if code is not None:
        return outcome_for(code)
    return Outcome(
        -1,
        "unknown",
        False,
        True,
        f"unknown blobpipe run state {state!r} (newer than this provider?): treated as a failure",
    )
