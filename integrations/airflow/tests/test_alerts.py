"""The nightly example DAG's failure alert: a task that fails for good POSTs the blobpipe
report to $BACKUP_ALERT_WEBHOOK (a local HTTP server here)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from .conftest import airflow_bin, make_files


def test_a_task_failing_for_good_sends_the_alert(blobpipe_bin: str, tmp_path: Path) -> None:
    got: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length", "0"))
            got.append(json.loads(self.rfile.read(n)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        make_files(tmp_path / "files", n=1)
        env = os.environ.copy()
        env.update(
            {
                "BLOBPIPE_TARGET_URL": f"file://{tmp_path / 'store'}",
                # No database URL: the pipeline file does not load (exit 2, no retry).
                "APP_FILES_ROOT": str(tmp_path / "files"),
                "BACKUP_ALERT_WEBHOOK": f"http://127.0.0.1:{server.server_port}/hook",
                "AIRFLOW_CONN_BLOBPIPE_DEFAULT": json.dumps(
                    {"conn_type": "blobpipe", "extra": {"binary": blobpipe_bin}}
                ),
            }
        )
        env.pop("APP_DB_URL", None)
        r = subprocess.run(
            [airflow_bin(), "dags", "test", "blobpipe_nightly_backup", "2026-11-30"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        server.shutdown()
    log = r.stdout + r.stderr
    alerts = [a for a in got if "backup_database" in a["text"]]
    assert len(alerts) == 1, (got, log[-4000:])
    a = alerts[0]
    assert "failed for good (try 1)" in a["text"]
    assert "[blobpipe exit 2: config]" in a["text"]
    assert "APP_DB_URL" in a["text"]
    assert a["report"]["exit_code"] == 2
    assert not [x for x in got if "backup_files" in x["text"]], "the files backup succeeded"
