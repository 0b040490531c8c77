"""A blobpipe for the retry test: the real binary, except that the first try of each
backup of the example DAG does not get through.

* ``app-files``: interrupted with SIGTERM as soon as its first partition has a part record
  (what a worker eviction does); blobpipe stops before commit and exits 130.
* ``app-db``: runs as is (its role cannot read one table: exit 1); afterwards the missing
  ``SELECT`` is granted, as an operator would fix it between two tries.

Configured by the environment: FLAKY_REAL (the binary), FLAKY_STATE (a directory for
"already happened" marks), FLAKY_STORE (the local store root), FLAKY_PG_URL and
FLAKY_HEAL_SQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    real = os.environ["FLAKY_REAL"]
    state = Path(os.environ["FLAKY_STATE"])
    args = sys.argv[1:]
    cmd = [real, *args]
    is_backup = "backup" in args
    if is_backup and any(a.endswith("app-files.toml") for a in args):
        mark = state / "files-interrupted"
        if not mark.exists():
            mark.touch()
            parts = Path(os.environ["FLAKY_STORE"]) / "backups" / "app-files" / "parts"
            proc = subprocess.Popen(cmd)
            while proc.poll() is None:
                if any(parts.glob("*/f-*")):  # a finished partition (not plan.json.gz)
                    proc.send_signal(signal.SIGTERM)
                    break
                time.sleep(0.002)
            return proc.wait()
    rc = subprocess.call(cmd)
    if is_backup and rc != 0 and any(a.endswith("app-db.toml") for a in args):
        mark = state / "db-healed"
        if not mark.exists():
            subprocess.run(
                ["psql", os.environ["FLAKY_PG_URL"], "-qc", os.environ["FLAKY_HEAL_SQL"]],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            mark.touch()
    return rc


if __name__ == "__main__":
    sys.exit(main())
