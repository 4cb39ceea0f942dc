"""Load generation for the server benchmark: `hey` runs (parsed) and small HTTP helpers.

`hey` (Debian package, listed in scripts/bootstrap.sh) is the same load generator for both
servers; its summary gives requests/s and the latency distribution, its status-code distribution
the number of 2xx replies. hey splits `-n` evenly over `-c` workers, so `n` is rounded down to a
multiple of `c` here and the count actually sent is reported.
"""

from __future__ import annotations

import base64
import json
import re
import resource
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from streamml import procs


@dataclass(frozen=True)
class HeyResult:
    """One hey run: throughput and latency (ms) as hey measured them, and the replies' codes."""

    requests: int
    concurrency: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    ok: int  # 2xx replies
    statuses: dict[str, int]
    errors: int  # connection-level errors hey reported
    hey_cpu_s: float = 0.0  # CPU time hey itself used (it shares the machine's 2 cores)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def hey_path() -> str:
    path = shutil.which("hey")
    if path is None:
        raise RuntimeError("hey not found: run scripts/bootstrap.sh (apt package 'hey')")
    return path


_REQS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_AVG = re.compile(r"Average:\s+([0-9.]+) secs")
_PCT = re.compile(r"(\d+)% in ([0-9.]+) secs")
_STATUS = re.compile(r"\[(\d{3})\]\s+(\d+) responses")


def parse_hey(output: str, requests: int, concurrency: int) -> HeyResult:
    """Read hey's default summary output."""
    reqs = _REQS.search(output)
    if reqs is None:
        raise RuntimeError(f"unexpected hey output:\n{output[-2000:]}")
    pct = {int(p): float(s) * 1000 for p, s in _PCT.findall(output)}
    statuses = {code: int(n) for code, n in _STATUS.findall(output)}
    errors = 0
    if "Error distribution:" in output:
        tail = output.split("Error distribution:", 1)[1]
        errors = sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]", tail, re.MULTILINE))
    avg = _AVG.search(output)
    return HeyResult(
        requests=requests,
        concurrency=concurrency,
        req_per_s=float(reqs.group(1)),
        p50_ms=pct.get(50, float("nan")),
        p99_ms=pct.get(99, float("nan")),
        mean_ms=float(avg.group(1)) * 1000 if avg else float("nan"),
        ok=sum(n for code, n in statuses.items() if code.startswith("2")),
        statuses=statuses,
        errors=errors,
    )


def run_hey(
    url: str,
    body: dict[str, Any],
    *,
    requests: int,
    concurrency: int,
    headers: dict[str, str] | None = None,
    timeout_s: int = 30,
) -> HeyResult:
    """POST the same JSON body `requests` times over `concurrency` keep-alive connections."""
    requests = max(concurrency, requests - requests % concurrency)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(body, f)
        body_path = Path(f.name)
    cmd = [hey_path(), "-n", str(requests), "-c", str(concurrency), "-t", str(timeout_s)]
    cmd += ["-m", "POST", "-T", "application/json", "-D", str(body_path)]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(url)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = procs.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    finally:
        body_path.unlink(missing_ok=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return replace(parse_hey(done.stdout, requests, concurrency), hey_cpu_s=round(cpu, 3))


def http_json(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """One request with a JSON body (also on GET, as riverapi sends it); returns (status, JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            raw = reply.read()
            status = reply.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def fetch_jwt(base_url: str, user: str, token: str) -> str:
    """riverapi's handshake, step 3: Basic user:token at the realm -> a bearer token."""
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()
    status, reply = http_json(
        "GET", f"{base_url}/api/auth/token/", headers={"Authorization": f"Basic {basic}"}
    )
    if status != 200 or not isinstance(reply, dict) or "token" not in reply:
        raise RuntimeError(f"token handshake failed: {status} {reply!r}")
    return str(reply["token"])


def learn_calls(base_url: str, model: str, headers: dict[str, str] | None = None) -> int:
    """The server's own count of learn calls for a model (stats `learn.n_calls`)."""
    query = urllib.parse.urlencode({"model": model})
    status, reply = http_json(
        "GET", f"{base_url}/api/stats/?{query}", body={"model": model}, headers=headers
    )
    if status != 200 or not isinstance(reply, dict):
        raise RuntimeError(f"stats for {model}: {status} {reply!r}")
    return int(reply["learn"]["n_calls"])


def storage_commits(base_url: str, headers: dict[str, str] | None = None) -> int | None:
    """Our server's group-commit counter from /metrics (None where there is none)."""
    request = urllib.request.Request(f"{base_url}/metrics", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            text = reply.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    match = re.search(r"^streamml_storage_commits(?:_total)?\s+([0-9.e+]+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else None
