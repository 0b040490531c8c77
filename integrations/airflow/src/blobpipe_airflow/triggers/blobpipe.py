"""Triggers: the waits a deferred blobpipe task hands to Airflow's triggerer.

* :class:`BlobpipeRunTrigger` waits for one run to end — polling ``blobpipe serve``
  (``GET /api/runs?id=…``) for remote runs, or ``blobpipe status --json`` (the pipeline's
  last run record) for local ones.
* :class:`BlobpipeCommandTrigger` runs one local ``blobpipe`` command to its end as an
  asyncio subprocess (the triggerer's event loop stays free; the work is in blobpipe's
  process). Used by ``BlobpipeBackupOperator(deferrable=True)`` without a serve URL. If the
  triggerer restarts, the trigger runs again with the same ``--run-id``, and blobpipe
  resumes the run.
* :class:`BlobpipeFreshnessTrigger` polls ``blobpipe check --json`` until the pipeline has
  a verified snapshot young enough (the RPO check as a wait).

Every trigger yields exactly one event: a dict with ``status`` (``ended``, ``fresh``,
``timeout`` or ``error``) and what the task needs to finish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Optional

from blobpipe_airflow._compat import BaseTrigger, TriggerEvent
from blobpipe_airflow.errors import BlobpipeError
from blobpipe_airflow.hooks.blobpipe import BlobpipeHook

_MODULE = "blobpipe_airflow.triggers.blobpipe"


class _HookTrigger(BaseTrigger):
    """Shared: how to reach blobpipe (the hook's arguments), poll interval, deadline."""

    def __init__(
        self,
        *,
        blobpipe_conn_id: Optional[str] = BlobpipeHook.default_conn_name,
        binary: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        poll_interval: float = 30.0,
        deadline: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.blobpipe_conn_id = blobpipe_conn_id
        self.binary = binary
        self.env = dict(env or {})
        self.cwd = cwd
        self.poll_interval = float(poll_interval)
        #: Unix time after which the wait gives up (``None``: never).
        self.deadline = deadline

    def _common(self) -> dict[str, Any]:
        return {
            "blobpipe_conn_id": self.blobpipe_conn_id,
            "binary": self.binary,
            "env": self.env,
            "cwd": self.cwd,
            "poll_interval": self.poll_interval,
            "deadline": self.deadline,
        }

    async def _hook(self) -> BlobpipeHook:
        hook = BlobpipeHook(self.blobpipe_conn_id, self.binary, self.env, self.cwd)
        # Reading the connection may touch the metadata database: not on the event loop.
        await asyncio.to_thread(lambda: hook.settings)
        return hook

    def _expired(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline


class BlobpipeRunTrigger(_HookTrigger):
    """Waits until run ``run_id`` of ``pipeline`` has ended; yields its state.

    ``pipeline`` is the pipeline's name for remote runs, its file for local ones.
    """

    def __init__(self, run_id: str, pipeline: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id
        self.pipeline = pipeline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and arguments, to be re-created in the triggerer."""
        return (
            f"{_MODULE}.BlobpipeRunTrigger",
            {"run_id": self.run_id, "pipeline": self.pipeline, **self._common()},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the run ends (or the deadline passes)."""
        try:
            hook = await self._hook()
            while True:
                st = await hook.aended_run(self.pipeline, self.run_id, log=self.log)
                if st is not None:
                    yield TriggerEvent({"status": "ended", "run_id": self.run_id, "run": st})
                    return
                if self._expired():
                    yield TriggerEvent({"status": "timeout", "run_id": self.run_id})
                    return
                await asyncio.sleep(self.poll_interval)
        except BlobpipeError as e:
            yield TriggerEvent({"status": "error", "run_id": self.run_id, "message": str(e)})


class BlobpipeCommandTrigger(_HookTrigger):
    """Runs ``blobpipe ARGS --json`` to its end; yields the exit code and the JSON report."""

    def __init__(self, args: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.args = list(args)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and arguments, to be re-created in the triggerer."""
        return (f"{_MODULE}.BlobpipeCommandTrigger", {"args": self.args, **self._common()})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Run the command (stderr goes to the triggerer's log for this task)."""
        try:
            hook = await self._hook()
            res = await hook.arun_command(self.args, log=self.log)
        except BlobpipeError as e:
            yield TriggerEvent({"status": "error", "message": str(e)})
            return
        yield TriggerEvent(
            {
                "status": "ended",
                "exit_code": res.exit_code,
                "report": res.report,
                "stderr_tail": res.stderr_tail,
            }
        )


class BlobpipeFreshnessTrigger(_HookTrigger):
    """Polls ``blobpipe check PIPELINE [--max-age AGE]`` until it exits 0 (fresh)."""

    def __init__(self, pipeline: str, max_age: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.max_age = max_age

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and arguments, to be re-created in the triggerer."""
        return (
            f"{_MODULE}.BlobpipeFreshnessTrigger",
            {"pipeline": self.pipeline, "max_age": self.max_age, **self._common()},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Check, sleep, check again; a config error (exit 2) ends the wait at once."""
        try:
            hook = await self._hook()
            while True:
                res = await hook.arun_command(
                    BlobpipeHook.check_args(self.pipeline, self.max_age), log=self.log
                )
                if res.ok:
                    yield TriggerEvent({"status": "fresh", "report": res.report})
                    return
                if not res.outcome.retryable:
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "exit_code": res.exit_code,
                            "report": res.report,
                            "message": f"blobpipe check exited {res.exit_code} "
                            f"({res.outcome.name}): {res.outcome.meaning}",
                        }
                    )
                    return
                if self._expired():
                    yield TriggerEvent({"status": "timeout", "report": res.report})
                    return
                await asyncio.sleep(self.poll_interval)
        except BlobpipeError as e:
            yield TriggerEvent({"status": "error", "message": str(e)})
