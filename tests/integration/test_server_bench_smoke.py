"""The server benchmark still runs end to end (tiny mode), so it does not rot between releases.

It sets up the real old server (django-river-ml in its throwaway virtualenv, gunicorn), starts our
server, drives both with hey and riverapi, and writes its JSON. Timings are not asserted; what
the run counted is: every acknowledged learn is in each server's own count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "server_bench.py"


def test_server_bench_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "server.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--sync", "normal", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    measured = result["measured"]
    assert set(measured) == {"old", "ours-normal", "inprocess", "echo"}

    for side in ("old", "ours-normal"):
        for name in ("seq_learn", "seq_predict", "conc_learn", "conc_predict"):
            run = measured[side][name]
            assert run["ok"] == run["requests"], (side, name, run["statuses"])
            assert run["req_per_s"] > 0
        kept = measured[side]["learns_kept"]
        assert kept["kept"] == kept["acknowledged"] == kept["sent"], (side, kept)
        assert measured[side]["riverapi_learn"]["per_s"] > 0
        assert measured[side]["riverapi_predict"]["per_s"] > 0

    batch = measured["ours-normal"]["batch_learn"]
    assert batch["all_learned"], batch
    assert batch["samples_per_s"] > 0
    backfill = measured["ours-normal"]["batch_backfill"]
    assert backfill["all_learned"], backfill
    assert backfill["samples_per_s"] > 0
    assert measured["inprocess"]["learn_one_per_s"] > 0

    assert set(result["targets"]["ours-normal"]) == {
        "concurrent_learn_10x",
        "concurrent_predict_10x",
        "p99_under_10ms",
        "zero_learns_lost",
        "batch_within_2x_of_inprocess",
        "batch_within_2x_of_inprocess_progressive",
        "learn_only_batch_within_2x_of_learn_one",
    }
    assert result["targets"]["ours-normal"]["zero_learns_lost"] is True
    assert result["markdown"].startswith("| measure | old (django-river-ml) |")
    assert '`"update_metrics": false`' in result["markdown"]
    # The script stopped every server it started (by PID) before it exited.
    assert set(result["pids"]) == {"old", "ours-normal", "echo"}
    for side, pid in result["pids"].items():
        assert not Path(f"/proc/{pid}").exists() or _reused_by_another(pid), side


def _reused_by_another(pid: int) -> bool:
    """A PID that still exists is fine only if it was reused by an unrelated process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True
    return not any(name in cmdline for name in ("gunicorn", "serve", "_echo_server"))
