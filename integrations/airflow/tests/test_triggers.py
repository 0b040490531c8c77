"""The triggers, run as the triggerer runs them: re-created from serialize(), their async
run() driven by an event loop, against the real binary and a real `blobpipe serve`."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from airflow.utils.module_loading import import_string

from blobpipe_airflow.hooks.blobpipe import BlobpipeHook
from blobpipe_airflow.triggers.blobpipe import (
    BlobpipeCommandTrigger,
    BlobpipeFreshnessTrigger,
    BlobpipeRunTrigger,
)

from .conftest import make_files, write_fs_pipeline


def recreate(trigger: Any) -> Any:
    """What the triggerer does: import the classpath, call it with the stored kwargs."""
    classpath, kwargs = trigger.serialize()
    json.dumps(kwargs)  # stored in the metadata database: must be plain data
    return import_string(classpath)(**kwargs)


def events(trigger: Any) -> list[Any]:
    async def collect() -> list[Any]:
        return [e async for e in recreate(trigger).run()]

    return asyncio.run(collect())


def test_command_trigger_runs_a_backup_to_its_end(blobpipe_bin: str, tmp_path: Path) -> None:
    make_files(tmp_path / "src")
    p = write_fs_pipeline(tmp_path, "t1", tmp_path / "src", tmp_path / "store")
    trig = BlobpipeCommandTrigger(
        args=BlobpipeHook.backup_args(str(p), "trig-run-1", wait_lock=True),
        blobpipe_conn_id=None,
        binary=blobpipe_bin,
    )
    (ev,) = events(trig)
    assert ev.payload["status"] == "ended"
    assert ev.payload["exit_code"] == 0
    assert ev.payload["report"]["run_id"] == "trig-run-1"
    assert ev.payload["report"]["snapshot"]
    # The triggerer restarted and ran it again: same run id, nothing redone, same snapshot.
    (again,) = events(trig)
    assert again.payload["exit_code"] == 0
    assert again.payload["report"]["snapshot"] == ev.payload["report"]["snapshot"]


def test_freshness_trigger_times_out_stale_and_fires_fresh(
    blobpipe_bin: str, tmp_path: Path
) -> None:
    make_files(tmp_path / "src", n=2)
    p = write_fs_pipeline(tmp_path, "t2", tmp_path / "src", tmp_path / "store")
    kw: dict[str, Any] = {"blobpipe_conn_id": None, "binary": blobpipe_bin, "poll_interval": 0.1}
    (ev,) = events(BlobpipeFreshnessTrigger(str(p), "26h", deadline=time.time() - 1, **kw))
    assert ev.payload["status"] == "timeout"
    assert ev.payload["report"]["stale"] == 1
    assert BlobpipeHook(None, blobpipe_bin).backup(str(p), None).ok
    (ev,) = events(BlobpipeFreshnessTrigger(str(p), "26h", **kw))
    assert ev.payload["status"] == "fresh"
    assert ev.payload["report"]["pipelines"][0]["newest_verified"]


def test_freshness_trigger_stops_on_a_config_error(blobpipe_bin: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 1\n")
    (ev,) = events(
        BlobpipeFreshnessTrigger(str(bad), None, blobpipe_conn_id=None, binary=blobpipe_bin)
    )
    assert ev.payload["status"] == "error"
    assert ev.payload["exit_code"] == 2


def test_run_trigger_waits_for_a_remote_run(serve: str) -> None:
    hook = BlobpipeHook("blobpipe_serve")
    assert hook.settings.remote
    started = hook.start_remote_run("srv", "remote-run-1")
    assert started["run_id"] == "remote-run-1"
    trig = BlobpipeRunTrigger(
        run_id="remote-run-1", pipeline="srv", blobpipe_conn_id="blobpipe_serve", poll_interval=0.1
    )
    (ev,) = events(trig)
    assert ev.payload["status"] == "ended"
    assert ev.payload["run"]["state"] == "ok"
    assert ev.payload["run"]["snapshot"]
    assert hook.get_remote_run("no-such-run", "srv") is None
