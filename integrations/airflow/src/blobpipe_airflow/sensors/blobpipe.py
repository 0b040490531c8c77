"""BlobpipeRunSensor: wait for a blobpipe run to end, or for a fresh verified snapshot.

* With ``run_id``: waits until that run of ``pipeline`` has ended (remote runs through
  ``blobpipe serve``'s status query; local ones through ``blobpipe status``, which knows
  the pipeline's *last* run), then succeeds if it ended ``ok`` and fails with the run's
  outcome otherwise (the same exceptions as the backup operator).
* Without ``run_id``: the RPO check as a sensor. Waits until ``blobpipe check PIPELINE
  [--max-age AGE]`` exits 0 — the newest *verified* snapshot is younger than the
  pipeline's ``[freshness] rpo`` (else ``max_age``). Stale (exit 9) means "not yet";
  a pipeline file error (exit 2) fails at once.

``deferrable=True`` hands the wait to the triggerer; the sensor's ``timeout`` becomes the
trigger's deadline (then :class:`~airflow.exceptions.AirflowSensorTimeout`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from airflow.exceptions import AirflowSensorTimeout

from blobpipe_airflow._compat import BaseSensorOperator, PokeReturnValue
from blobpipe_airflow.errors import BlobpipeRetryableError, error_for
from blobpipe_airflow.exit_codes import outcome_for, outcome_for_state
from blobpipe_airflow.hooks.blobpipe import BlobpipeHook
from blobpipe_airflow.triggers.blobpipe import BlobpipeFreshnessTrigger, BlobpipeRunTrigger


class BlobpipeRunSensor(BaseSensorOperator):
    """Waits for a blobpipe run, or (without ``run_id``) for a fresh verified snapshot.

    :param pipeline: pipeline file (local) or name (remote runs). Templated.
    :param run_id: the run to wait for, e.g. pulled from a backup task's XCom. Templated.
    :param max_age: freshness limit for pipelines without ``[freshness] rpo`` (``26h``).
    :param deferrable: wait in the triggerer instead of a worker slot.
    """

    template_fields: Sequence[str] = ("pipeline", "run_id", "max_age", "env")
    ui_color = "#e8e0f8"

    def __init__(
        self,
        *,
        pipeline: str,
        run_id: Optional[str] = None,
        max_age: Optional[str] = None,
        deferrable: bool = False,
        blobpipe_conn_id: Optional[str] = BlobpipeHook.default_conn_name,
        binary: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.run_id = run_id
        self.max_age = max_age
        self.deferrable = deferrable
        self.blobpipe_conn_id = blobpipe_conn_id
        self.binary = binary
        self.env = dict(env or {})
        self.cwd = cwd

    @property
    def hook(self) -> BlobpipeHook:
        """A hook with this sensor's settings."""
        return BlobpipeHook(self.blobpipe_conn_id, self.binary, self.env, self.cwd)

    def _hook_kwargs(self) -> dict[str, Any]:
        return {
            "blobpipe_conn_id": self.blobpipe_conn_id,
            "binary": self.binary,
            "env": self.env,
            "cwd": self.cwd,
            "poll_interval": float(self.poke_interval),
            "deadline": time.time() + float(self.timeout) if self.timeout else None,
        }

    def execute(self, context: Any) -> Any:
        """Poke in the worker, or defer to a trigger."""
        if not self.deferrable:
            return super().execute(context)
        trigger: Any
        if self.run_id:
            trigger = BlobpipeRunTrigger(
                run_id=self.run_id, pipeline=self.pipeline, **self._hook_kwargs()
            )
        else:
            trigger = BlobpipeFreshnessTrigger(
                pipeline=self.pipeline, max_age=self.max_age, **self._hook_kwargs()
            )
        self.defer(trigger=trigger, method_name="execute_complete")
        return None  # not reached: defer raises

    def poke(self, context: Any) -> Any:
        """One look: ``True``/report when done, ``False`` to look again, raise on failure."""
        hook = self.hook
        if self.run_id:
            st = hook.ended_run(self.pipeline, self.run_id)
            if st is None:
                return False
            return PokeReturnValue(True, self._ended(st))
        res = hook.run_command(BlobpipeHook.check_args(self.pipeline, self.max_age))
        if res.ok:
            return PokeReturnValue(True, res.report)
        if res.outcome.retryable:
            self.log.info("not fresh yet (exit %d, %s)", res.exit_code, res.outcome.name)
            return False
        raise error_for(res.outcome, f"check {self.pipeline}", res.report)

    def _ended(self, st: dict[str, Any]) -> dict[str, Any]:
        outcome = outcome_for_state(str(st.get("state") or st.get("status")))
        if not outcome.success:
            raise error_for(outcome, f"run {self.run_id} of {self.pipeline}", st)
        return st

    def execute_complete(self, context: Any, event: Optional[dict[str, Any]] = None) -> Any:
        """Back from the triggerer."""
        ev = event or {}
        status = ev.get("status")
        if status == "ended":
            return self._ended(ev.get("run") or {})
        if status == "fresh":
            return ev.get("report")
        if status == "timeout":
            raise AirflowSensorTimeout(
                f"blobpipe sensor for {self.pipeline} timed out after {self.timeout} s"
            )
        code = ev.get("exit_code")
        if isinstance(code, int):
            raise error_for(outcome_for(code), f"check {self.pipeline}", ev.get("report"))
        raise BlobpipeRetryableError(f"{self.pipeline}: {ev.get('message')}", outcome_for(1))
