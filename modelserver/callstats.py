"""How long a model's calls take: counts and durations of learn and predict, in nanoseconds
(the old server's ``stats`` reply, with its human-readable durations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: weight of the newest call in the exponentially weighted mean duration
EWM_ALPHA = 0.1


def human_duration(ns: int) -> str:
    """``1950828`` -> ``1ms950μs828ns`` (the old server's human form)."""
    if ns <= 0:
        return "0ns"
    parts = []
    for unit, size in (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000)):
        if ns >= size:
            parts.append(f"{ns // size}{unit}")
            ns %= size
    for unit, size in (("ms", 1_000_000), ("μs", 1_000), ("ns", 1)):
        if ns >= size:
            parts.append(f"{ns // size}{unit}")
            ns %= size
    return "".join(parts)


@dataclass
class CallStats:
    """Count and durations of one kind of call (learn or predict), in nanoseconds."""

    n_calls: int = 0
    total_ns: int = 0
    ewm_ns: float = 0.0

    def record(self, ns: int) -> None:
        self.n_calls += 1
        self.total_ns += ns
        self.ewm_ns = (
            float(ns) if self.n_calls == 1 else EWM_ALPHA * ns + (1 - EWM_ALPHA) * self.ewm_ns
        )

    def record_many(self, ns: int, count: int) -> None:
        """``count`` calls of ``ns`` each, as ``count`` :meth:`record` calls would (bit for bit:
        a replay of the log records them one by one and must agree), one method call."""
        if count <= 0:
            return
        ewm = float(ns) if self.n_calls == 0 else self.ewm_ns
        keep = 1 - EWM_ALPHA
        weighted = EWM_ALPHA * ns
        for _ in range(count if self.n_calls else count - 1):
            ewm = weighted + keep * ewm
        self.n_calls += count
        self.total_ns += ns * count
        self.ewm_ns = ewm

    def to_data(self) -> dict[str, Any]:
        mean = self.total_ns // self.n_calls if self.n_calls else 0
        ewm = round(self.ewm_ns)
        return {
            "n_calls": self.n_calls,
            "mean_duration": mean,
            "mean_duration_human": human_duration(mean),
            "ewm_duration": ewm,
            "ewm_duration_human": human_duration(ewm),
        }
