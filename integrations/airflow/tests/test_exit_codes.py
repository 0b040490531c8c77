"""The exit-code table against blobpipe's own: docs/exit-codes.md and src/cli/exit.rs."""

from __future__ import annotations

import re

import pytest
from airflow.exceptions import AirflowException, AirflowFailException

from blobpipe_airflow.errors import (
    BlobpipeFatalError,
    BlobpipeMismatchError,
    BlobpipePartialError,
    BlobpipeRetryableError,
    error_for,
)
from blobpipe_airflow.exit_codes import EXIT_CODES, outcome_for, outcome_for_state

from .conftest import REPO


def documented_codes() -> dict[int, str]:
    """`| code | name | meaning |` rows of docs/exit-codes.md."""
    text = (REPO / "docs" / "exit-codes.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ([a-z ]+) \|", text, flags=re.M)
    assert rows, "docs/exit-codes.md has no code table"
    return {int(c): n.strip().replace(" ", "_") for c, n in rows}


def test_every_documented_code_is_in_the_table_with_its_name() -> None:
    for code, name in documented_codes().items():
        assert code in EXIT_CODES, f"exit {code} ({name}) is documented but not mapped"
        assert EXIT_CODES[code].name == name


def test_every_code_constant_of_the_binary_is_mapped() -> None:
    src = (REPO / "src" / "cli" / "exit.rs").read_text()
    consts = re.findall(r"pub const ([A-Z_]+): i32 = (\d+);", src)
    assert consts
    for name, code in consts:
        assert int(code) in EXIT_CODES, f"src/cli/exit.rs {name} = {code} is not mapped"


def test_only_zero_succeeds() -> None:
    assert [c for c, o in EXIT_CODES.items() if o.success] == [0]


@pytest.mark.parametrize("code", [42, 12, 255])
def test_unknown_codes_fail_naming_the_code_and_allow_retries(code: int) -> None:
    o = outcome_for(code)
    assert not o.success
    assert o.retryable
    assert str(code) in o.meaning
    e = error_for(o, "backup home")
    assert isinstance(e, BlobpipeRetryableError)
    assert not isinstance(e, AirflowFailException)
    assert f"exit {code}" in str(e)


def test_partial_and_mismatch_are_told_apart_and_skip_retries() -> None:
    partial = error_for(outcome_for(4), "backup home", {"error": None})
    mismatch = error_for(outcome_for(3), "backup home")
    assert type(partial) is BlobpipePartialError
    assert type(mismatch) is BlobpipeMismatchError
    for e in (partial, mismatch):
        assert isinstance(e, AirflowFailException), "a retry would exit 0 on a committed run"
    assert "partial" in str(partial)
    assert "mismatch" in str(mismatch)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (1, BlobpipeRetryableError),
        (5, BlobpipeRetryableError),
        (130, BlobpipeRetryableError),
        (2, BlobpipeFatalError),
        (6, BlobpipeFatalError),
        (7, BlobpipeFatalError),
        (8, BlobpipeFatalError),
    ],
)
def test_retryable_failures_use_retries_others_fail_at_once(code: int, cls: type) -> None:
    e = error_for(outcome_for(code), "x", {"error": "the reason"})
    assert type(e) is cls
    assert isinstance(e, AirflowException)
    assert isinstance(e, AirflowFailException) == (cls is BlobpipeFatalError)
    assert "the reason" in str(e)


def test_run_states_map_like_their_exit_codes() -> None:
    assert outcome_for_state("ok").success
    assert outcome_for_state("partial").name == "partial"
    assert outcome_for_state("mismatch").code == 3
    assert outcome_for_state("locked").retryable
    unverified = outcome_for_state("committed_unverified")
    assert (unverified.code, unverified.success, unverified.retryable) == (10, False, True)
    new = outcome_for_state("reticulating")
    assert not new.success
    assert "reticulating" in new.meaning
