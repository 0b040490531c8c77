"""Operators: one blobpipe backup, restore or restore drill per task.

The backup's blobpipe run id is derived from the task instance (DAG, task, Airflow run
id, map index; see :func:`~blobpipe_airflow.hooks.blobpipe.blobpipe_run_id`), so a retry
of the task resumes the same run instead of starting over. Exit codes become task
outcomes through :mod:`blobpipe_airflow.exit_codes`: failures that a retry can fix (1, 5,
130, unknown codes) use the task's retries; config errors, partial and mismatched runs
fail at once (a retry of a committed run would exit 0 and hide them), with
:class:`~blobpipe_airflow.errors.BlobpipePartialError` and
:class:`~blobpipe_airflow.errors.BlobpipeMismatchError` told apart for callbacks.

Every operator pushes its report to XCom under ``report`` (also when it fails, so failure
callbacks can read it) and returns it (``return_value``) when it succeeds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from blobpipe_airflow._compat import BaseOperator
from blobpipe_airflow.errors import BlobpipeRetryableError, error_for
from blobpipe_airflow.exit_codes import Outcome, outcome_for, outcome_for_state
from blobpipe_airflow.hooks.blobpipe import BlobpipeHook, CommandResult, blobpipe_run_id
from blobpipe_airflow.reports import backup_report
from blobpipe_airflow.triggers.blobpipe import BlobpipeCommandTrigger, BlobpipeRunTrigger

#: XCom key of every operator's report.
REPORT_KEY = "report"


class _BlobpipeOperator(BaseOperator):
    """Shared arguments: how to reach blobpipe."""

    def __init__(
        self,
        *,
        blobpipe_conn_id: Optional[str] = BlobpipeHook.default_conn_name,
        binary: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.blobpipe_conn_id = blobpipe_conn_id
        self.binary = binary
        self.env = dict(env or {})
        self.cwd = cwd
        self._hook: Optional[BlobpipeHook] = None

    @property
    def hook(self) -> BlobpipeHook:
        """The hook for this task."""
        if self._hook is None:
            self._hook = BlobpipeHook(self.blobpipe_conn_id, self.binary, self.env, self.cwd)
        return self._hook

    def _hook_kwargs(self) -> dict[str, Any]:
        return {
            "blobpipe_conn_id": self.blobpipe_conn_id,
            "binary": self.binary,
            "env": self.env,
            "cwd": self.cwd,
        }

    def on_kill(self) -> None:
        """The task was killed: stop blobpipe with SIGTERM (a backup stops resumably)."""
        if self._hook is not None:
            self._hook.terminate()

    def _push(self, context: Any, report: Any) -> None:
        context["ti"].xcom_push(key=REPORT_KEY, value=report)

    def _finish_command(self, context: Any, res: CommandResult, what: str) -> Any:
        """Push ``res``'s report; raise its outcome's exception unless it succeeded."""
        self._push(context, res.report)
        if not res.ok:
            report = res.report
            if report is None and res.stderr_tail:
                report = {"error": res.stderr_tail[-1]}
            raise error_for(res.outcome, what, report)
        return res.report


class BlobpipeBackupOperator(_BlobpipeOperator):
    """Run one backup of a blobpipe pipeline.

    :param pipeline: the pipeline file (local runs) or the pipeline's name (remote runs
        through ``blobpipe serve``). Templated.
    :param run_id: blobpipe run id. Default: derived from the task instance, the same on
        every try (a retry resumes). Templated.
    :param no_verify: skip the after-commit verification (``--no-verify``).
    :param wait_lock: wait for a running backup of the pipeline instead of failing with
        exit 5 (``--wait-lock``).
    :param full: read everything even if an incremental is possible (``--full``).
    :param accept_partial: let a partial run (exit 4: committed, some files unreadable)
        succeed, with a warning, instead of failing the task.
    :param deferrable: hand the wait to the triggerer: a remote run is polled by
        :class:`BlobpipeRunTrigger`; a local one runs in :class:`BlobpipeCommandTrigger`
        (with ``--wait-lock``, so a restarted triggerer resumes the same run).
    :param poll_interval: seconds between status queries of a remote run.
    """

    template_fields: Sequence[str] = ("pipeline", "run_id", "env")
    ui_color = "#cfe8fc"

    def __init__(
        self,
        *,
        pipeline: str,
        run_id: Optional[str] = None,
        no_verify: bool = False,
        wait_lock: bool = False,
        full: bool = False,
        accept_partial: bool = False,
        deferrable: bool = False,
        poll_interval: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.run_id = run_id
        self.no_verify = no_verify
        self.wait_lock = wait_lock
        self.full = full
        self.accept_partial = accept_partial
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    def blobpipe_run_id(self, context: Any) -> str:
        """The run id for this task instance (the same on every try)."""
        if self.run_id:
            return str(self.run_id)
        ti = context["ti"]
        map_index = getattr(ti, "map_index", None)
        return blobpipe_run_id(
            ti.dag_id, ti.task_id, context["run_id"], -1 if map_index is None else int(map_index)
        )

    def execute(self, context: Any) -> Any:
        """Start the backup; finish it here or defer the wait."""
        run_id = self.blobpipe_run_id(context)
        try_number = getattr(context["ti"], "try_number", None)
        self.log.info("blobpipe run id %s (try %s of this task)", run_id, try_number)
        hook = self.hook
        if hook.settings.remote:
            hook.start_remote_run(self.pipeline, run_id)
            if self.deferrable:
                self.defer(
                    trigger=BlobpipeRunTrigger(
                        run_id=run_id,
                        pipeline=self.pipeline,
                        poll_interval=self.poll_interval,
                        **self._hook_kwargs(),
                    ),
                    method_name="execute_complete",
                )
            while True:
                st = hook.ended_run(self.pipeline, run_id)
                if st is not None:
                    return self._finish_state(context, run_id, st)
                time.sleep(self.poll_interval)
        args = hook.backup_args(
            self.pipeline,
            run_id,
            no_verify=self.no_verify,
            wait_lock=self.wait_lock or self.deferrable,
            full=self.full,
        )
        if self.deferrable:
            self.defer(
                trigger=BlobpipeCommandTrigger(args=args, **self._hook_kwargs()),
                method_name="execute_complete",
            )
        res = hook.run_command(args)
        return self._finish(context, run_id, res.exit_code, res.outcome, res.report)

    def execute_complete(
        self, context: Any, event: Optional[dict[str, Any]] = None, **_kwargs: Any
    ) -> Any:
        """Back from the triggerer: turn its event into the task's outcome."""
        ev = event or {}
        # Derived again rather than passed along: `airflow dags test` drops defer kwargs.
        run_id = self.blobpipe_run_id(context)
        if ev.get("status") == "error":
            raise BlobpipeRetryableError(
                f"backup {self.pipeline}: {ev.get('message')}", outcome_for(1)
            )
        if "run" in ev:
            return self._finish_state(context, run_id, ev["run"])
        code = int(ev.get("exit_code", 1))
        return self._finish(context, run_id, code, outcome_for(code), ev.get("report"))

    def _finish_state(self, context: Any, run_id: str, st: dict[str, Any]) -> Any:
        """A remote run's final state (``serve``'s ``state`` or a record's ``status``)."""
        outcome = outcome_for_state(str(st.get("state") or st.get("status")))
        return self._finish(context, run_id, outcome.code, outcome, st)

    def _finish(
        self, context: Any, run_id: str, code: int, outcome: Outcome, doc: Any
    ) -> dict[str, Any]:
        report = backup_report(doc, exit_code=code, outcome=outcome.name, pipeline=self.pipeline)
        if not report.get("run_id"):
            report["run_id"] = run_id
        self._push(context, report)
        self.log.info("blobpipe report: %s", report)
        if outcome.success:
            return report
        if outcome.name == "partial" and self.accept_partial:
            self.log.warning(
                "partial backup accepted: snapshot %s committed, but some files were not "
                "read consistently: %s",
                report.get("snapshot"),
                (doc or {}).get("problems") if isinstance(doc, dict) else None,
            )
            return report
        raise error_for(outcome, f"backup {self.pipeline} (run {run_id})", report)


class BlobpipeRestoreOperator(_BlobpipeOperator):
    """Restore a snapshot into a directory (``to``) or a database (``to_db``).

    Runs the local binary (the restore writes where the worker is). ``snapshot`` is an id,
    a unique prefix or ``latest``; ``at`` picks the newest snapshot at or before a time.
    ``to_db`` takes ``postgres://…`` / ``mysql://…``; put the password in the connection's
    ``env`` (``PGPASSWORD`` / ``MYSQL_PWD``) rather than in the URL. Exit 7 (the target
    is not empty) and 8 (archived: rehydrate first) fail the task without retries.
    ``jobs`` loads on up to N connections at once (``--jobs``, default 4) and
    ``fk_check="bulk"`` checks foreign keys once per key before commit (``--fk-check``,
    PostgreSQL, needs the right to set ``session_replication_role``).
    """

    template_fields: Sequence[str] = ("pipeline", "snapshot", "at", "to", "to_db", "env")
    ui_color = "#d5f5d5"

    def __init__(
        self,
        *,
        pipeline: str,
        snapshot: Optional[str] = "latest",
        at: Optional[str] = None,
        to: Optional[str] = None,
        to_db: Optional[str] = None,
        tables: Sequence[str] = (),
        strategies: Sequence[str] = (),
        schema: Optional[str] = None,
        no_transaction: bool = False,
        jobs: Optional[int] = None,
        fk_check: Optional[str] = None,
        paths: Sequence[str] = (),
        overwrite: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.snapshot = snapshot
        self.at = at
        self.to = to
        self.to_db = to_db
        self.tables = list(tables)
        self.strategies = list(strategies)
        self.schema = schema
        self.no_transaction = no_transaction
        self.jobs = jobs
        self.fk_check = fk_check
        self.paths = list(paths)
        self.overwrite = overwrite

    def execute(self, context: Any) -> Any:
        """Run ``blobpipe restore … --json``."""
        args = self.hook.restore_args(
            self.pipeline,
            self.snapshot,
            at=self.at,
            to=self.to,
            to_db=self.to_db,
            tables=self.tables,
            strategies=self.strategies,
            schema=self.schema,
            no_transaction=self.no_transaction,
            jobs=self.jobs,
            fk_check=self.fk_check,
            paths=self.paths,
            overwrite=self.overwrite,
        )
        res = self.hook.run_command(args)
        return self._finish_command(context, res, f"restore {self.pipeline}")


class BlobpipeDrillOperator(_BlobpipeOperator):
    """A restore drill: restore the newest (or a given) snapshot into scratch, check every
    hash, record the measured restore time (RTO). Database pipelines need ``scratch_db``
    (or ``[restore] scratch_url`` in the pipeline). Exit 3 (data did not match) raises
    :class:`~blobpipe_airflow.errors.BlobpipeMismatchError`."""

    template_fields: Sequence[str] = ("pipeline", "snapshot", "scratch_dir", "scratch_db", "env")
    ui_color = "#fde7c8"

    def __init__(
        self,
        *,
        pipeline: str,
        snapshot: Optional[str] = None,
        scratch_dir: Optional[str] = None,
        scratch_db: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.snapshot = snapshot
        self.scratch_dir = scratch_dir
        self.scratch_db = scratch_db

    def execute(self, context: Any) -> Any:
        """Run ``blobpipe drill … --json``."""
        args = self.hook.drill_args(
            self.pipeline, self.snapshot, scratch_dir=self.scratch_dir, scratch_db=self.scratch_db
        )
        res = self.hook.run_command(args)
        return self._finish_command(context, res, f"drill {self.pipeline}")
