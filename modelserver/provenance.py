"""Where a model's samples came from: the origin index of one model.

A learn may carry a ``provenance`` object (sweep, trial, attempt, image digest, LAMMPS version,
host, a few extra keys; checked by :func:`streamml.vocabulary.wire.check_provenance`). The learn
log keeps it per sample (the optional 6th element of a row, ``LearnRecord``); the log is
compacted at every snapshot, so the model's state keeps what a query needs past it: for every key
and value, how many samples, and the first and last sample index. A sample's index is the model's
learn count after it (1, 2, ...: the ``samples`` axis of ``/api/history/{model}``), so the same
sample gets the same index live and on replay, and the index survives a snapshot (it is pickled
with the model) and a restart (the log after the snapshot replays into it exactly).

Bounded: at most :data:`MAX_KEYS` distinct keys and :data:`MAX_VALUES` distinct values per model
(16 384 trials of one sweep, say); a sample past a bound is still counted, under ``other`` of its
key (or ``unindexed_keys``), never dropped in silence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: distinct keys one model indexes (6 known ones plus extra ones)
MAX_KEYS = 16
#: distinct values one model indexes over all its keys
MAX_VALUES = 16_384


def _tally(index: int) -> list[int]:
    """[count, first sample index, last sample index] (a list: small to pickle, cheap to bump)."""
    return [0, index, index]


class Origins:
    """The origin index of one model (see the module docstring)."""

    __slots__ = ("keys", "other", "samples", "unindexed", "values")

    def __init__(self) -> None:
        #: key -> value -> [count, first, last]
        self.keys: dict[str, dict[str, list[int]]] = {}
        #: key -> the tally of its values past MAX_VALUES
        self.other: dict[str, list[int]] = {}
        #: samples learned with a provenance
        self.samples = 0
        #: distinct values indexed
        self.values = 0
        #: key -> samples whose key was past MAX_KEYS (not indexed)
        self.unindexed: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in self.__slots__:
            setattr(self, name, state[name])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Origins) and self.__getstate__() == other.__getstate__()

    __hash__ = None  # type: ignore[assignment]

    def add(self, provenance: Mapping[str, str], index: int) -> None:
        """Sample ``index`` came from ``provenance``."""
        self.samples += 1
        keys = self.keys
        for key, value in provenance.items():
            values = keys.get(key)
            if values is None:
                if len(keys) >= MAX_KEYS:
                    if key in self.unindexed or len(self.unindexed) < MAX_KEYS:
                        self.unindexed[key] = self.unindexed.get(key, 0) + 1
                    continue
                values = keys[key] = {}
            tally = values.get(value)
            if tally is None:
                if self.values >= MAX_VALUES:
                    tally = self.other.get(key)
                    if tally is None:
                        tally = self.other[key] = _tally(index)
                else:
                    tally = values[value] = _tally(index)
                    self.values += 1
            tally[0] += 1
            tally[2] = index

    def by(self, key: str, *, limit: int) -> dict[str, Any]:
        """The samples split by ``key``: per value its count and first/last sample index (the
        ``limit`` values with the most samples), plus the samples with no such key."""
        values = self.keys.get(key, {})
        ranked = sorted(values.items(), key=lambda item: (-item[1][0], item[1][1]))
        shown = ranked[:limit]
        counted = sum(tally[0] for tally in values.values())
        other = self.other.get(key)
        if other is not None:
            counted += other[0]
        data: dict[str, Any] = {
            "key": key,
            "values": [
                {"value": value, "count": c, "first": first, "last": last}
                for value, (c, first, last) in shown
            ],
            "distinct": len(values),
            "truncated": len(ranked) > limit,
            "without_key": self.samples - counted,
        }
        if other is not None:
            data["other"] = {"count": other[0], "first": other[1], "last": other[2]}
        return data

    def summary(self) -> dict[str, Any]:
        """The keys present and their numbers of distinct values."""
        data: dict[str, Any] = {
            "samples_with_provenance": self.samples,
            "keys": {key: len(values) for key, values in self.keys.items()},
        }
        if self.unindexed:
            data["unindexed_keys"] = dict(self.unindexed)
        return data
