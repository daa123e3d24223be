"""The node's disk fills: a file-size limit (RLIMIT_FSIZE, set on the running node from
outside, as ``prlimit`` does) makes SQLite's writes fail with EFBIG. Updates get error
results, nothing is corrupted, and service resumes when the limit is lifted."""

from __future__ import annotations

import resource
import sqlite3
from pathlib import Path

from edgetwin.wire import topics
from tests.support import NodeProcess, Paho, thermostat, unique, write_manifests


async def test_writes_fail_cleanly_and_resume_when_space_returns(tmp_path: Path) -> None:
    name = unique("dev")
    device = f"default/{name}"
    manifests = write_manifests(tmp_path / "manifests", [thermostat(name)])
    update = topics.twin_update_topic(device)
    big = "x" * 60_000

    def label(event_id: str, value: str) -> dict[str, object]:
        return {"event_id": event_id, "twin": {"label": {"actual": {"value": value}}}}

    with NodeProcess(tmp_path / "data", node=unique("node"), manifests=manifests) as node:
        assert node.proc is not None
        pid = node.proc.pid
        async with Paho(node.port) as client:
            await client.subscribe(f"{update}/result", f"{topics.twin_get_topic(device)}/result")
            assert "code" not in await client.request(update, label("1", "before"))

            _soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (4096, hard))  # the disk is full
            failed = await client.request(update, label("2", big))
            assert (failed["code"], failed["event_id"]) == (500, "2")
            got = await client.request(topics.twin_get_topic(device), {"event_id": "3"})
            assert got["twin"]["label"]["actual"]["value"] == "before"

            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))  # space again
            assert "code" not in await client.request(update, label("4", big))
        assert node.stop() == 0

    with sqlite3.connect(tmp_path / "data" / "edgetwin.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = db.execute(
            "SELECT reported FROM twins WHERE device = ? AND property = 'label'", (device,)
        ).fetchone()[0]
    assert stored == big
