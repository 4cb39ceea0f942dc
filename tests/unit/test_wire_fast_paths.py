"""The hand-checked fast paths give the verdicts of the schemas they mirror.

One corpus of bodies (valid, malformed, missing fields, hostile, oversized, legal but huge) goes
to both the pydantic schema (``model_validate_json``, as the server's fallback runs it) and the
fast path (on orjson's parse, as the hot path runs it); they must agree: both accept with the
same values, or both refuse naming the same field (``loc[0]`` of pydantic's first error).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from streamml.vocabulary.wire import (
    MAX_FEATURES,
    FieldError,
    LearnRequest,
    LearnSample,
    PredictRequest,
    fast_learn,
    fast_predict,
    fast_sample,
    learn_samples,
)

FEATURES = {"nx": 8, "ny": 16.5, "nz": -3, "kind": "lj", "flag": True, "gap": None}
HUGE_FEATURES = {f"f{i:04d}" + "x" * 190: "v" * 1_000 for i in range(MAX_FEATURES)}
NAME_63 = "a" + "b" * 61 + "c"

#: feature objects: (label, value); every one is used in each kind of body below
FEATURE_CASES: list[tuple[str, Any]] = [
    ("plain", FEATURES),
    ("empty", {}),
    ("huge but legal", HUGE_FEATURES),
    ("too many", {f"f{i}": 1 for i in range(MAX_FEATURES + 1)}),
    ("empty name", {"": 1.0}),
    ("long name", {"n" * 201: 1.0}),
    ("name of 200", {"n" * 200: 1.0}),
    ("long string", {"s": "x" * 1_001}),
    ("string of 1000", {"s": "x" * 1_000}),
    ("nested object", {"x": {"y": 1}}),
    ("array value", {"x": [1, 2]}),
    ("at the magnitude bound", {"x": 1e50, "y": -1e50}),
    ("beyond the magnitude bound", {"x": 1.0000001e50}),
    ("huge float", {"x": 1e308}),
    ("int64 max", {"x": 2**63 - 1}),
    ("int64 min", {"x": -(2**63)}),
    ("beyond int64", {"x": 2**63}),
    ("negative zero", {"x": -0.0}),
    ("unicode names", {"ñ-é": 1.0, "日本": 2}),
    ("proto keys", {"__proto__": 1, "constructor": 2}),
    ("not an object", [1, 2, 3]),
    ("a string", "nx=8"),
    ("null", None),
]

#: targets (ground truth, prediction): (label, value)
TARGET_CASES: list[tuple[str, Any]] = [
    ("float", 0.42),
    ("int", 7),
    ("bool", False),
    ("label", "class-a"),
    ("zero", 0.0),
    ("long label", "y" * 1_001),
    ("label of 1000", "y" * 1_000),
    ("object", {"a": 1}),
    ("array", [0.42]),
    ("beyond the bound", -2e50),
    ("beyond int64", -(2**63)),
]

#: identifiers: (label, value)
IDENTIFIER_CASES: list[tuple[str, Any]] = [
    ("plain", "sweep-t0007"),
    ("empty", ""),
    ("200", "i" * 200),
    ("201", "i" * 201),
    ("number", 7),
    ("bool", True),
    ("unicode", "ß" * 200),
]

#: provenance objects: (label, value)
PROVENANCE_CASES: list[tuple[str, Any]] = [
    ("known keys", {"sweep": "eos", "trial": "u/t00001", "attempt": "1", "host": "node-1"}),
    ("four extra keys", {"cluster": "a", "partition": "b", "rack": "c", "site": "d"}),
    ("five extra keys", {"k1": "a", "k2": "b", "k3": "c", "k4": "d", "k5": "e"}),
    ("empty", {}),
    ("value of 200", {"host": "h" * 200}),
    ("value of 201", {"host": "h" * 201}),
    ("empty value", {"host": ""}),
    ("number value", {"attempt": 2}),
    ("null value", {"host": None}),
    ("nested", {"host": {"name": "a"}}),
    ("newline", {"host": "a\nb"}),
    ("escape", {"host": "\u001b[31m"}),
    ("upper-case key", {"Host": "a"}),
    ("key of 33", {"k" * 33: "a"}),
    ("unicode value", {"host": "nœud-日本"}),
    ("not an object", ["host", "a"]),
    ("a string", "host=a"),
]

#: model names: (label, value)
NAME_CASES: list[tuple[str, Any]] = [
    ("plain", "lin"),
    ("63", NAME_63),
    ("64", NAME_63 + "d"),
    ("upper case", "Lin"),
    ("leading dash", "-lin"),
    ("trailing dash", "lin-"),
    ("trailing newline", "lin\n"),
    ("path", "../etc"),
    ("empty", ""),
    ("number", 3),
    ("list", ["lin"]),
]

#: the unknown fields of the corpus (kept when a body is recast for another schema)
UNKNOWN = ("modle", "zzz", "aaa")


def learn_corpus() -> list[tuple[str, bytes]]:
    """Bodies of POST /api/learn/ (recast below for a batch sample and a predict)."""
    ok = {"features": FEATURES, "ground_truth": 1.5}
    bodies: list[tuple[str, Any]] = [("minimal", ok), ("features only", {"features": FEATURES})]
    bodies += [(f"features {label}", {**ok, "features": v}) for label, v in FEATURE_CASES]
    for field in ("ground_truth", "prediction"):
        bodies += [(f"{field} {label}", {**ok, field: v}) for label, v in TARGET_CASES]
        bodies.append((f"{field} null", {**ok, field: None}))
    bodies += [(f"identifier {label}", {**ok, "identifier": v}) for label, v in IDENTIFIER_CASES]
    bodies += [(f"provenance {label}", {**ok, "provenance": v}) for label, v in PROVENANCE_CASES]
    bodies += [(f"model {label}", {**ok, "model": v}) for label, v in NAME_CASES]
    bodies += [(f"models [{label}]", {**ok, "models": [v]}) for label, v in NAME_CASES]
    bodies += [
        ("no features", {"ground_truth": 1.0}),
        ("empty object", {}),
        ("models empty", {**ok, "models": []}),
        ("models null and model null", {**ok, "models": None, "model": None}),
        ("models not a list", {**ok, "models": "lin"}),
        ("models 1000", {**ok, "models": ["m"] * 1_000}),
        ("models 1001", {**ok, "models": ["m"] * 1_001}),
        ("model and models", {**ok, "model": "a", "models": ["b"]}),
        ("unknown field", {**ok, "modle": "lin"}),
        ("unknown fields after a bad one", {**ok, "zzz": 1, "features": 3, "aaa": 2}),
        ("bad everything", {"model": 1, "features": [], "ground_truth": {}, "identifier": ""}),
        ("an array", [ok]),
        ("a number", 42),
        ("null", None),
    ]
    corpus = [(label, orjson.dumps(body)) for label, body in bodies]
    ok_text = orjson.dumps(ok).decode()
    corpus += [
        ("duplicate key", b'{"features": {"x": 1}, "features": {"y": 2}, "ground_truth": 1}'),
        ("NaN literal", ok_text.replace("1.5", "NaN").encode()),
        ("Infinity literal", ok_text.replace("1.5", "-Infinity").encode()),
        ("1e400", ok_text.replace("1.5", "1e400").encode()),
        ("beyond 64 bits", ok_text.replace("1.5", str(2**64)).encode()),
        ("truncated", ok_text[:-3].encode()),
        ("trailing garbage", ok_text.encode() + b"}"),
        ("lone surrogate", b'{"features": {"\\ud800": 1}, "ground_truth": 1}'),
        ("deeply nested", b'{"features": {"x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}}"),
        ("empty", b""),
        ("whitespace", b"  \n"),
    ]
    return corpus


def only(keys: tuple[str, ...], **defaults: Any) -> Callable[[bytes], bytes]:
    """Bodies of the learn corpus recast for a schema with other fields: its own fields (and
    the unknown ones) kept, ``defaults`` for its required fields the corpus does not vary."""

    def recast(raw: bytes) -> bytes:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
        if isinstance(data, dict):
            data = {**defaults, **{k: v for k, v in data.items() if k in keys or k in UNKNOWN}}
        return orjson.dumps(data)

    return recast


def verdict_of_schema(schema: type[BaseModel], raw: bytes) -> tuple[str, Any]:
    try:
        body = schema.model_validate_json(raw)
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        return "refused", str(loc[0]) if loc else ""
    return "accepted", tuple(getattr(body, name) for name in schema.model_fields)


Fast = Callable[[Any], tuple[Any, ...]]


def verdict_of_fast(fast: Fast, raw: bytes) -> tuple[str, Any] | None:
    """None when orjson cannot parse it: the fast path never sees such a body (the server
    hands it to the schema)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    try:
        return "accepted", fast(data)
    except FieldError as exc:
        return "refused", exc.field


CASES: list[tuple[str, type[BaseModel], Fast, Callable[[bytes], bytes]]] = [
    ("learn", LearnRequest, fast_learn, only(tuple(LearnRequest.model_fields))),
    ("sample", LearnSample, fast_sample, only(tuple(LearnSample.model_fields))),
    ("predict", PredictRequest, fast_predict, only(tuple(PredictRequest.model_fields), model="m")),
]


@pytest.mark.parametrize(("kind", "schema", "fast", "recast"), CASES, ids=[c[0] for c in CASES])
def test_the_fast_path_gives_the_schemas_verdict(
    kind: str, schema: type[BaseModel], fast: Fast, recast: Callable[[bytes], bytes]
) -> None:
    seen = {"accepted": 0, "refused": 0, "unparsed": 0}
    disagreements = []
    for label, original in learn_corpus():
        raw = recast(original)
        expected = verdict_of_schema(schema, raw)
        got = verdict_of_fast(fast, raw)
        if got is None:
            seen["unparsed"] += 1
            continue
        seen[got[0]] += 1
        if got != expected:
            shown = [v if v[0] == "refused" else "accepted" for v in (expected, got)]
            disagreements.append((label, *shown))
    assert not disagreements, disagreements
    # the corpus exercises both verdicts, and the bodies only the schema sees
    assert seen["accepted"] >= 20 and seen["refused"] >= 25 and seen["unparsed"] >= 5, seen


def test_served_names_skip_the_name_check_but_nothing_else() -> None:
    served = {"lin"}
    assert fast_learn({"model": "lin", "features": {}}, served)[0] == "lin"
    with pytest.raises(FieldError) as refused:
        fast_learn({"model": ["lin"], "features": {}}, served)  # unhashable: no TypeError
    assert refused.value.field == "model"
    with pytest.raises(FieldError) as refused:
        fast_predict({"model": "lin", "features": {"x": float("nan")}}, served)
    assert refused.value.field == "features"


def test_a_batch_names_the_sample_and_the_field() -> None:
    good = {"features": {"x": 1.0}, "ground_truth": 2.0, "identifier": "a"}
    assert learn_samples([good, {"features": {}}]) == [({"x": 1.0}, 2.0, "a"), ({}, None, None)]
    cases = [
        ({"features": {"x": 1.0}, "ground_truth": [1]}, "samples[1]: ground_truth: must be"),
        ({"features": {"x": 1e51}}, "samples[1]: feature 'x' is too large in magnitude"),
        ({"ground_truth": 1.0}, "samples[1]: features: an object of feature values"),
        ({"features": {}, "identifier": ""}, "samples[1]: identifier: must be a string"),
        ({"features": {}, "extra": 1}, "samples[1]: unknown field(s) ['extra']"),
        ([1], "samples[1]: must be an object with 'features'"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            learn_samples([good, bad])
