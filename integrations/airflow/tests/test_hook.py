"""BlobpipeHook against the real binary: run ids, exit codes, reports and streamed logs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from blobpipe_airflow.errors import BlobpipeFatalError, error_for
from blobpipe_airflow.hooks.blobpipe import (
    BlobpipeHook,
    blobpipe_run_id,
    exit_code_of,
    log_line,
    redact,
)

from .conftest import make_files, write_fs_pipeline

SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def test_run_ids_are_safe_stable_and_distinct() -> None:
    a = blobpipe_run_id("nightly", "backup_db", "scheduled__2026-12-01T02:00:00+00:00")
    assert a == blobpipe_run_id("nightly", "backup_db", "scheduled__2026-12-01T02:00:00+00:00")
    assert SAFE.match(a), a
    assert a.startswith("nightly.backup_db.scheduled__2026-12-01T02-00-00-00-00-")
    # Same readable form, different inputs: different ids.
    b = blobpipe_run_id("nightly", "backup_db", "scheduled__2026-12-01T02:00:00-00:00")
    assert a != b
    assert blobpipe_run_id("d", "t", "r", 0) != blobpipe_run_id("d", "t", "r", 1)
    assert blobpipe_run_id("d", "t", "r", 0) != blobpipe_run_id("d", "t", "r")
    long = blobpipe_run_id("d" * 200, "t" * 200, "r" * 200)
    assert SAFE.match(long)
    assert SAFE.match(blobpipe_run_id("::", "++", "//"))


def test_redact_hides_url_passwords() -> None:
    s = redact("--to-db postgres://app:s3cr3t@db:5432/x and mysql://root:p@h/d")
    assert "s3cr3t" not in s
    assert ":p@" not in s
    assert "postgres://app:***@db:5432/x" in s


def test_signal_deaths_read_like_a_shell() -> None:
    assert exit_code_of(-15) == 143
    assert exit_code_of(-2) == 130
    assert exit_code_of(4) == 4


def test_json_log_lines_keep_their_level_and_fields(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("t")
    with caplog.at_level(logging.DEBUG, logger="t"):
        log_line(log, '{"level":"WARN","fields":{"message":"slow","n":3},"target":"blobpipe::x"}')
        log_line(log, "error: run r1: boom")
        log_line(log, "not json at all")
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels[0] == (logging.WARNING, "[blobpipe::x] slow (n=3)")
    assert levels[1][0] == logging.ERROR
    assert levels[2] == (logging.INFO, "not json at all")


def hook(binary: str) -> BlobpipeHook:
    return BlobpipeHook(blobpipe_conn_id=None, binary=binary)


def test_backup_report_exit_zero_and_streamed_logs(blobpipe_bin: str, tmp_path: Path) -> None:
    make_files(tmp_path / "src")
    p = write_fs_pipeline(tmp_path, "h1", tmp_path / "src", tmp_path / "store")
    lines: list[str] = []
    res = hook(blobpipe_bin).run_command(
        BlobpipeHook.backup_args(str(p), "run-1"), on_line=lines.append
    )
    assert res.exit_code == 0
    assert res.ok
    assert res.report["run_id"] == "run-1"
    assert res.report["status"] == "ok"
    assert res.report["snapshot"]
    assert res.report["totals"]["files"] == 20
    # --log-format json: every stderr line is one JSON log record
    assert lines
    assert any('"level"' in line for line in lines)


def test_real_exit_codes_map_to_outcomes(blobpipe_bin: str, tmp_path: Path) -> None:
    h = hook(blobpipe_bin)
    make_files(tmp_path / "src", n=3)
    p = write_fs_pipeline(tmp_path, "h2", tmp_path / "src", tmp_path / "store")
    # 6: no snapshot yet
    res = h.run_command(h.restore_args(str(p), "latest", to=str(tmp_path / "out")))
    assert (res.exit_code, res.outcome.name) == (6, "not_found")
    assert res.report["exit_code"] == 6
    # 9: no verified snapshot at all is stale
    res = h.run_command(h.check_args(str(p), "26h"))
    assert (res.exit_code, res.outcome.name) == (9, "stale")
    assert res.outcome.retryable
    assert h.run_command(h.backup_args(str(p), None)).ok
    assert h.run_command(h.check_args(str(p), "26h")).ok
    # 7: the target already holds the files
    assert h.run_command(h.restore_args(str(p), "latest", to=str(tmp_path / "out"))).ok
    res = h.run_command(h.restore_args(str(p), "latest", to=str(tmp_path / "out")))
    assert (res.exit_code, res.outcome.name) == (7, "refused")
    assert isinstance(error_for(res.outcome, "restore", res.report), BlobpipeFatalError)
    # 2: a pipeline file that does not parse
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nnope = 1\n')
    res = h.run_command(["validate", str(bad)])
    assert (res.exit_code, res.outcome.name) == (2, "config")


def test_a_missing_binary_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(BlobpipeFatalError, match="cannot start"):
        hook(str(tmp_path / "no-such-blobpipe")).run_command(["--version"])


def test_connection_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv(
        "AIRFLOW_CONN_BP_REMOTE",
        json.dumps(
            {
                "conn_type": "blobpipe",
                "host": "func.example.net",
                "password": "the-function-key",
                "extra": {"env": {"BLOBPIPE_TARGET_URL": "file:///x"}, "binary": "/opt/bp"},
            }
        ),
    )
    s = BlobpipeHook("bp_remote").settings
    assert s.remote
    assert s.base_url == "https://func.example.net"
    assert s.transport == "functions"
    assert s.binary == "/opt/bp"
    assert s.env == {"BLOBPIPE_TARGET_URL": "file:///x"}
    assert "the-function-key" not in repr(s)
    # No such connection: the local binary with defaults.
    local = BlobpipeHook("bp_not_defined", binary="/bin/bp").settings
    assert not local.remote
    assert local.binary == "/bin/bp"
    monkeypatch.setenv(
        "AIRFLOW_CONN_BP_BAD", json.dumps({"conn_type": "blobpipe", "extra": {"transport": "x"}})
    )
    with pytest.raises(BlobpipeFatalError, match="transport"):
        _ = BlobpipeHook("bp_bad").settings


def test_functions_transport_speaks_the_public_runs_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the hook sends through a Functions host: POST /api/runs/<pipeline>?run_id=…
    and GET /api/runs?id=…, with x-functions-key (a stand-in host on loopback)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen: list[tuple[str, str, str | None]] = []

    class Host(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            seen.append(("POST", self.path, self.headers.get("x-functions-key")))
            self._answer(202, {"run_id": "r-1", "state": "running"})

        def do_GET(self) -> None:
            seen.append(("GET", self.path, self.headers.get("x-functions-key")))
            if "id=r-1" in self.path:
                self._answer(200, {"run_id": "r-1", "state": "mismatch", "snapshot": "s1"})
            else:
                self._answer(404, {"error": "no run"})

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Host)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_BP_FUNC",
            json.dumps(
                {
                    "conn_type": "blobpipe",
                    "host": f"http://127.0.0.1:{server.server_port}",
                    "password": "k3y",
                }
            ),
        )
        h = BlobpipeHook("bp_func")
        assert h.start_remote_run("home", "r-1")["state"] == "running"
        st = h.ended_run("home", "r-1")
        assert st is not None
        assert st["state"] == "mismatch"
        assert h.get_remote_run("r-2", "home") is None
    finally:
        server.shutdown()
    assert seen[0] == ("POST", "/api/runs/home?run_id=r-1", "k3y")
    assert seen[1] == ("GET", "/api/runs?id=r-1&pipeline=home", "k3y")
    assert seen[2][0] == "GET"


def test_restore_args_pass_jobs_and_fk_check_to_a_database_restore_only() -> None:
    args = BlobpipeHook.restore_args(
        "p.toml", "latest", to_db="postgres://db/x", jobs=3, fk_check="bulk"
    )
    assert args[args.index("--jobs") + 1] == "3"
    assert args[args.index("--fk-check") + 1] == "bulk"
    plain = BlobpipeHook.restore_args("p.toml", "latest", to_db="postgres://db/x")
    assert "--jobs" not in plain
    assert "--fk-check" not in plain
    with pytest.raises(BlobpipeFatalError, match="database restore"):
        BlobpipeHook.restore_args("p.toml", "latest", to="/tmp/out", jobs=2)
