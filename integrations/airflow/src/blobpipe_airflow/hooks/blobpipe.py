"""BlobpipeHook: runs the ``blobpipe`` binary, or starts and queries runs of ``blobpipe serve``.

Two ways to reach blobpipe, chosen by the Airflow connection (``blobpipe_default`` unless
told otherwise; no connection at all means "the local binary"):

* **Local binary** (no host in the connection): every call is a ``blobpipe … --json``
  subprocess. Its stdout is the command's one JSON document; its stderr (with
  ``--log-format json``, one JSON object a line) is streamed into the task log as it comes.
  The exit code is the outcome (:mod:`blobpipe_airflow.exit_codes`).
* **Remote** (the connection's host is a URL): runs are started through ``blobpipe serve``'s
  HTTP trigger and their state is read back from it (``GET /api/runs?id=…``, which answers
  from memory or from the run's stored record, also for runs handed off to a Container
  Apps job through the hand-off queue). ``transport`` ``functions`` (default) speaks the
  Azure Functions public API (``/api/runs/<pipeline>``, ``x-functions-key`` from the
  connection's password); ``handler`` speaks the custom-handler envelope straight to a
  ``blobpipe serve`` the worker can reach (a sidecar, or a test).

Nothing here prints a secret: the function key is only ever a header, database URLs in
arguments are logged with their password replaced by ``***``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from blobpipe_airflow._compat import BaseHook
from blobpipe_airflow.errors import BlobpipeError, BlobpipeFatalError, BlobpipeRetryableError
from blobpipe_airflow.exit_codes import PENDING_STATES, Outcome, outcome_for

#: Longest run id blobpipe accepts (``support::ids::is_safe_segment``).
MAX_RUN_ID = 128
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
#: Lines of stderr kept for error messages.
_STDERR_TAIL = 20
#: Seconds an HTTP call to ``blobpipe serve`` may take (its HTTP triggers answer at once).
HTTP_TIMEOUT = 60.0


def blobpipe_run_id(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """The blobpipe ``--run-id`` for one Airflow task instance, stable across its tries.

    A retry of the task passes the same id, so blobpipe resumes the interrupted run (or,
    when it had committed, finds the snapshot and does nothing). The id is readable (the
    DAG, task and Airflow run id with unsafe characters replaced) and ends in a hash of the
    exact inputs, so two Airflow runs never share an id even when their readable parts do.
    """
    raw = f"{dag_id}\x00{task_id}\x00{run_id}\x00{map_index}"
    digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
    parts = [dag_id, task_id, run_id] + ([str(map_index)] if map_index >= 0 else [])
    readable = _UNSAFE.sub("-", ".".join(parts)).strip(".-")
    readable = readable[: MAX_RUN_ID - len(digest) - 1].rstrip(".-")
    return f"{readable}-{digest}" if readable else digest


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


@dataclass
class CommandResult:
    """How one ``blobpipe`` command ended."""

    #: The command line, passwords redacted.
    argv: list[str]
    exit_code: int
    outcome: Outcome
    #: The JSON document the command printed on stdout (``None`` if it printed none).
    report: Any
    #: The last lines of stderr, for messages.
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The command succeeded."""
        return self.outcome.success


def exit_code_of(returncode: int) -> int:
    """A subprocess return code as a shell would report it (killed by signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def parse_report(stdout: str) -> Any:
    """The JSON document on stdout, ``None`` if there is none or it does not parse."""
    text = stdout.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


class Log(Protocol):
    """What the provider needs of a logger: stdlib loggers (Airflow 2.10) and Airflow 3's
    structured ones both have it."""

    def log(self, level: int, msg: Any, /, *args: Any) -> Any:
        """Log at ``level``."""

    def info(self, msg: Any, /, *args: Any) -> Any:
        """Log at INFO."""


_LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}


def log_line(log: Log, line: str) -> None:
    """Write one stderr line of blobpipe into ``log``: JSON log lines at their own level with
    their fields, other lines (``error: …``, progress) as they are."""
    line = line.rstrip("\n")
    if not line.strip():
        return
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        rec = None
    if isinstance(rec, dict) and "level" in rec:
        f = rec.get("fields")
        fields: dict[str, Any] = f if isinstance(f, dict) else {}
        message = str(fields.get("message", ""))
        extra = " ".join(f"{k}={v}" for k, v in fields.items() if k != "message")
        level = _LEVELS.get(str(rec.get("level", "INFO")).upper(), logging.INFO)
        target = rec.get("target", "blobpipe")
        log.log(level, "[%s] %s%s", target, redact(message), f" ({redact(extra)})" if extra else "")
        return
    level = logging.ERROR if line.startswith("error:") else logging.INFO
    log.log(level, "%s", redact(line))


@dataclass(frozen=True)
class Settings:
    """What the connection (or the hook's arguments) say about reaching blobpipe."""

    binary: str
    env: Mapping[str, str]
    cwd: Optional[str]
    base_url: Optional[str]
    transport: str
    function_key: Optional[str] = field(repr=False, default=None)

    @property
    def remote(self) -> bool:
        """Runs go through ``blobpipe serve`` rather than a local binary."""
        return self.base_url is not None


class BlobpipeHook(BaseHook):
    """Runs blobpipe commands and reads their reports.

    :param blobpipe_conn_id: Airflow connection (type ``blobpipe``). Optional: without it
        the local binary is used. Its *host* (a URL) makes runs remote; its *password* is
        the Functions key; its *extra* JSON may hold ``binary`` (path of the executable),
        ``env`` (variables for the command, e.g. ``BLOBPIPE_TARGET_URL``), ``cwd`` and
        ``transport`` (``functions`` or ``handler``).
    :param binary: path of the ``blobpipe`` executable (overrides the connection; default
        ``$BLOBPIPE_BIN``, else ``blobpipe`` on ``PATH``).
    :param env: extra environment variables for the command (on top of the worker's).
    :param cwd: working directory for the command.
    """

    conn_name_attr = "blobpipe_conn_id"
    default_conn_name = "blobpipe_default"
    conn_type = "blobpipe"
    hook_name = "blobpipe"

    def __init__(
        self,
        blobpipe_conn_id: Optional[str] = default_conn_name,
        binary: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.blobpipe_conn_id = blobpipe_conn_id
        self._binary = binary
        self._env = dict(env or {})
        self._cwd = cwd
        self._settings: Optional[Settings] = None
        self._proc: Optional[subprocess.Popen[str]] = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """How the connection form looks in the Airflow UI."""
        return {
            "hidden_fields": ["schema", "login", "port"],
            "relabeling": {
                "host": "blobpipe serve URL (empty: run the local binary)",
                "password": "Functions key (x-functions-key)",
            },
            "placeholders": {
                "host": "https://<function-app>.azurewebsites.net",
                "extra": json.dumps(
                    {"binary": "/usr/local/bin/blobpipe", "env": {}, "transport": "functions"}
                ),
            },
        }

    # --- settings -------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The resolved settings (the connection is read once)."""
        if self._settings is None:
            self._settings = self._resolve()
        return self._settings

    def _resolve(self) -> Settings:
        extra: dict[str, Any] = {}
        host: Optional[str] = None
        port: Optional[int] = None
        key: Optional[str] = None
        if self.blobpipe_conn_id:
            conn = self._connection(self.blobpipe_conn_id)
            if conn is not None:
                extra = dict(conn.extra_dejson or {})
                host = conn.host or None
                port = conn.port
                key = conn.password or None
        env = {str(k): str(v) for k, v in dict(extra.get("env") or {}).items()}
        env.update(self._env)
        binary = (
            self._binary
            or extra.get("binary")
            or os.environ.get("BLOBPIPE_BIN")
            or shutil.which("blobpipe")
            or "blobpipe"
        )
        transport = str(extra.get("transport", "functions"))
        if transport not in ("functions", "handler"):
            raise BlobpipeFatalError(
                f"connection {self.blobpipe_conn_id}: transport must be 'functions' or "
                f"'handler', not {transport!r}",
                outcome_for(2),
            )
        base_url = None
        if host:
            base_url = host if "://" in host else f"https://{host}"
            if port and "://" not in host:
                base_url = f"{base_url}:{port}"
            base_url = base_url.rstrip("/")
        return Settings(
            binary=str(binary),
            env=env,
            cwd=self._cwd or extra.get("cwd"),
            base_url=base_url,
            transport=transport,
            function_key=key,
        )

    @staticmethod
    def _connection(conn_id: str) -> Any:
        """The connection, or ``None`` when it is not defined (the local defaults apply)."""
        try:
            return BaseHook.get_connection(conn_id)
        except Exception as e:  # AirflowNotFoundException, or 3.x's task-SDK equivalent
            if type(e).__name__ in ("AirflowNotFoundException", "ConnectionNotFound"):
                return None
            if "isn't defined" in str(e) or "not found" in str(e).lower():
                return None
            raise

    # --- local binary ---------------------------------------------------------------

    def argv(self, args: Sequence[str], *, json_logs: bool = True) -> list[str]:
        """The full command line for ``blobpipe ARGS --json`` (JSON logs on stderr).

        No ``--quiet``: it keeps only warnings and errors, and the task log wants the
        run's INFO lines; off a terminal blobpipe draws no progress anyway.
        """
        head = [self.settings.binary, "--json"]
        if json_logs:
            head += ["--log-format", "json"]
        return head + list(args)

    def _environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.settings.env)
        return env

    def run_command(
        self,
        args: Sequence[str],
        *,
        on_line: Optional[Callable[[str], None]] = None,
    ) -> CommandResult:
        """Run ``blobpipe ARGS --json`` to its end, streaming stderr into the task log.

        Never raises for an exit code: the result carries the outcome. Raises
        :class:`BlobpipeFatalError` when the binary cannot be started.
        """
        argv = self.argv(args)
        shown = [redact(a) for a in argv]
        self.log.info("running %s", " ".join(shown))
        sink = on_line or (lambda line: log_line(self.log, line))
        tail: list[str] = []
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=self._environ(),
                cwd=self.settings.cwd,
            )
        except OSError as e:
            raise BlobpipeFatalError(
                f"cannot start {shown[0]!r}: {e} (set the connection's extra 'binary' or "
                "BLOBPIPE_BIN)",
                outcome_for(2),
            ) from e
        self._proc = proc

        def pump() -> None:
            assert proc.stderr is not None  # noqa: S101 - set by Popen above
            for line in proc.stderr:
                tail.append(line.rstrip("\n"))
                del tail[:-_STDERR_TAIL]
                sink(line)

        reader = threading.Thread(target=pump, name="blobpipe-stderr", daemon=True)
        reader.start()
        assert proc.stdout is not None  # noqa: S101 - set by Popen above
        stdout = proc.stdout.read()
        returncode = proc.wait()
        reader.join()
        self._proc = None
        code = exit_code_of(returncode)
        outcome = outcome_for(code)
        self.log.info("blobpipe exited %d (%s)", code, outcome.name)
        return CommandResult(shown, code, outcome, parse_report(stdout), tail)

    async def arun_command(
        self,
        args: Sequence[str],
        *,
        log: Optional[Log] = None,
    ) -> CommandResult:
        """:meth:`run_command` for triggers: an asyncio subprocess, the event loop stays free."""
        argv = self.argv(args)
        shown = [redact(a) for a in argv]
        out: Log = log or self.log
        out.info("running %s", " ".join(shown))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
                env=self._environ(),
                cwd=self.settings.cwd,
            )
        except OSError as e:
            raise BlobpipeFatalError(f"cannot start {shown[0]!r}: {e}", outcome_for(2)) from e
        tail: list[str] = []

        async def pump() -> None:
            assert proc.stderr is not None  # noqa: S101 - set above
            async for raw in proc.stderr:
                line = raw.decode(errors="replace")
                tail.append(line.rstrip("\n"))
                del tail[:-_STDERR_TAIL]
                log_line(out, line)

        async def read_stdout() -> bytes:
            assert proc.stdout is not None  # noqa: S101 - set above
            return await proc.stdout.read()

        try:
            stdout, _ = await asyncio.gather(read_stdout(), pump())
            returncode = await proc.wait()
        except asyncio.CancelledError:
            # The trigger was cancelled (task cleared, triggerer stopping): stop blobpipe
            # the way a scheduler does, resumably (SIGTERM: it exits 130 before commit).
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 30)
            raise
        code = exit_code_of(returncode)
        return CommandResult(
            shown, code, outcome_for(code), parse_report(stdout.decode(errors="replace")), tail
        )

    def terminate(self) -> None:
        """Stop a running command with SIGTERM (blobpipe stops resumably, exit 130)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.log.info("sending SIGTERM to blobpipe (pid %d)", proc.pid)
            proc.terminate()

    # --- command builders (the real flags of `blobpipe --help`) ---------------------

    @staticmethod
    def backup_args(
        pipeline: str,
        run_id: Optional[str],
        *,
        no_verify: bool = False,
        wait_lock: bool = False,
        full: bool = False,
    ) -> list[str]:
        """``backup PIPELINE [--run-id ID] [--no-verify] [--wait-lock] [--full]``."""
        args = ["backup", pipeline]
        if run_id:
            args += ["--run-id", run_id]
        if no_verify:
            args.append("--no-verify")
        if wait_lock:
            args.append("--wait-lock")
        if full:
            args.append("--full")
        return args

    @staticmethod
    def restore_args(
        pipeline: str,
        snapshot: Optional[str] = None,
        *,
        at: Optional[str] = None,
        to: Optional[str] = None,
        to_db: Optional[str] = None,
        tables: Iterable[str] = (),
        strategies: Iterable[str] = (),
        schema: Optional[str] = None,
        no_transaction: bool = False,
        jobs: Optional[int] = None,
        fk_check: Optional[str] = None,
        paths: Iterable[str] = (),
        overwrite: bool = False,
    ) -> list[str]:
        """``restore PIPELINE [SNAPSHOT | --at T] (--to DIR | --to-db URL …)``.

        ``jobs`` (``--jobs N``, connections loading at once) and ``fk_check``
        (``--fk-check immediate|bulk``) only apply to a database restore; given with ``to``
        they are a configuration error, as on the command line."""
        if (to is None) == (to_db is None):
            raise BlobpipeFatalError(
                "restore needs exactly one of `to` (a directory) or `to_db` (a database URL)",
                outcome_for(2),
            )
        if to_db is None and (jobs is not None or fk_check is not None):
            raise BlobpipeFatalError(
                "`jobs` and `fk_check` apply to a database restore (`to_db`) only",
                outcome_for(2),
            )
        args = ["restore", pipeline]
        if at:
            args += ["--at", at]
        elif snapshot:
            args.append(snapshot)
        if to is not None:
            args += ["--to", to]
        if to_db is not None:
            args += ["--to-db", to_db]
            for t in tables:
                args += ["--table", t]
            for s in strategies:
                args += ["--strategy", s]
            if schema:
                args += ["--schema", schema]
            if no_transaction:
                args.append("--no-transaction")
            if jobs is not None:
                args += ["--jobs", str(jobs)]
            if fk_check is not None:
                args += ["--fk-check", fk_check]
        for p in paths:
            args += ["--path", p]
        if overwrite:
            args.append("--overwrite")
        return args

    @staticmethod
    def drill_args(
        pipeline: str,
        snapshot: Optional[str] = None,
        *,
        scratch_dir: Optional[str] = None,
        scratch_db: Optional[str] = None,
    ) -> list[str]:
        """``drill PIPELINE [--snapshot ID] [--scratch-dir DIR] [--scratch-db URL]``."""
        args = ["drill", pipeline]
        if snapshot:
            args += ["--snapshot", snapshot]
        if scratch_dir:
            args += ["--scratch-dir", scratch_dir]
        if scratch_db:
            args += ["--scratch-db", scratch_db]
        return args

    @staticmethod
    def check_args(pipelines: str, max_age: Optional[str] = None) -> list[str]:
        """``check PIPELINES [--max-age AGE]`` (exit 9 when stale)."""
        args = ["check", pipelines]
        if max_age:
            args += ["--max-age", max_age]
        return args

    def backup(self, pipeline: str, run_id: Optional[str], **flags: bool) -> CommandResult:
        """Run one backup; see :meth:`backup_args`."""
        return self.run_command(self.backup_args(pipeline, run_id, **flags))

    def status(self, pipelines: str) -> CommandResult:
        """``blobpipe status PIPELINES --json``: last run, newest verified snapshot, …"""
        return self.run_command(["status", pipelines])

    # --- remote: blobpipe serve -----------------------------------------------------

    def _http(
        self, method: str, path: str, query: Mapping[str, str], params: Mapping[str, str]
    ) -> tuple[int, Any]:
        """One call to ``blobpipe serve``: (HTTP status the run API answered, JSON body)."""
        s = self.settings
        if s.base_url is None:
            raise BlobpipeFatalError("no blobpipe serve URL in the connection", outcome_for(2))
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if s.transport == "functions":
            url = f"{s.base_url}/api/{path}"
            if query:
                url += "?" + urllib.parse.urlencode(query)
            data = b"" if method == "POST" else None
            if s.function_key:
                headers["x-functions-key"] = s.function_key
        else:
            # The custom-handler envelope, as the Functions host would send it.
            url = f"{s.base_url}/runs"
            req_binding = {
                "Method": method,
                "Url": f"{s.base_url}/api/{path}",
                "Query": dict(query),
                "Params": dict(params),
                "Headers": {},
                "Body": "",
            }
            data = json.dumps({"Data": {"req": req_binding}, "Metadata": {}}).encode()
            method = "POST"
        if not url.startswith(("http://", "https://")):
            raise BlobpipeFatalError(f"not an http(s) URL: {s.base_url}", outcome_for(2))
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as r:  # noqa: S310
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise BlobpipeRetryableError(
                f"cannot reach blobpipe serve at {s.base_url}: {e}", outcome_for(1)
            ) from e
        answer = parse_report(body.decode(errors="replace"))
        if s.transport == "handler":
            res = (answer or {}).get("Outputs", {}).get("res") if isinstance(answer, dict) else None
            if status != 200 or not isinstance(res, dict):
                raise BlobpipeRetryableError(
                    f"blobpipe serve answered {status}: {answer!r}", outcome_for(1)
                )
            status = int(res.get("statusCode", 500))
            answer = parse_report(str(res.get("body", "")))
        return status, answer

    def start_remote_run(self, pipeline: str, run_id: str) -> dict[str, Any]:
        """Start (or resume) run ``run_id`` of ``pipeline`` on ``blobpipe serve``.

        A run of the pipeline that is already going under the same id is adopted (a task
        retry after the worker died); one under another id is ``locked`` (retryable).
        """
        status, body = self._http(
            "POST",
            f"runs/{urllib.parse.quote(pipeline)}",
            {"run_id": run_id},
            {"pipeline": pipeline},
        )
        body = body if isinstance(body, dict) else {"error": body}
        if status in (200, 202):
            self.log.info("blobpipe serve started run %s of %s: %s", run_id, pipeline, body)
            return body
        if status == 409 and body.get("run_id") == run_id:
            self.log.info("run %s of %s is already going; waiting for it", run_id, pipeline)
            return body
        if status == 409:
            raise BlobpipeRetryableError(
                f"a run of {pipeline} is already going ({body.get('run_id')})", outcome_for(5), body
            )
        outcome = outcome_for(2) if status in (400, 404) else outcome_for(1)
        cls = BlobpipeFatalError if status in (400, 404) else BlobpipeRetryableError
        raise cls(f"starting {pipeline} on blobpipe serve: HTTP {status}: {body}", outcome, body)

    def get_remote_run(
        self, run_id: str, pipeline: Optional[str] = None
    ) -> Optional[dict[str, Any]]:
        """The state of run ``run_id`` on ``blobpipe serve``; ``None`` when it knows none."""
        query = {"id": run_id} | ({"pipeline": pipeline} if pipeline else {})
        status, body = self._http("GET", "runs", query, {})
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise BlobpipeRetryableError(
                f"querying run {run_id}: HTTP {status}: {body}", outcome_for(1), body
            )
        return body

    @staticmethod
    def _ended(st: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        state = str((st or {}).get("state") or "")
        return None if st is None or not state or state in PENDING_STATES else st

    @staticmethod
    def _last_run(report: Any, run_id: str) -> Optional[dict[str, Any]]:
        """Run ``run_id`` in a ``status --json`` document, if it is a pipeline's last run."""
        doc = report if isinstance(report, dict) else {}
        for p in doc.get("pipelines") or []:
            last = p.get("last_run") if isinstance(p, dict) else None
            if isinstance(last, dict) and last.get("run_id") == run_id and last.get("status"):
                return {**last, "state": last["status"], "pipeline": p.get("pipeline")}
        return None

    def ended_run(self, pipeline: str, run_id: str) -> Optional[dict[str, Any]]:
        """Run ``run_id``'s final state (a ``state`` key: ``ok``, ``failed`` …) once it has
        ended, else ``None``. Remote: ``blobpipe serve``'s status query (``pipeline`` is the
        name). Local: ``blobpipe status PIPELINE --json`` (the file), which knows the
        pipeline's last run record only."""
        if self.settings.remote:
            return self._ended(self.get_remote_run(run_id, pipeline))
        return self._last_run(self.status(pipeline).report, run_id)

    async def aended_run(
        self, pipeline: str, run_id: str, *, log: Optional[Log] = None
    ) -> Optional[dict[str, Any]]:
        """:meth:`ended_run` for triggers."""
        if self.settings.remote:
            return self._ended(await self.aget_remote_run(run_id, pipeline))
        res = await self.arun_command(["status", pipeline], log=log)
        return self._last_run(res.report, run_id)

    async def aget_remote_run(
        self, run_id: str, pipeline: Optional[str] = None
    ) -> Optional[dict[str, Any]]:
        """:meth:`get_remote_run` for triggers (the blocking call runs in a thread)."""
        return await asyncio.to_thread(self.get_remote_run, run_id, pipeline)


__all__ = [
    "BlobpipeError",
    "BlobpipeHook",
    "CommandResult",
    "blobpipe_run_id",
    "log_line",
    "redact",
]
