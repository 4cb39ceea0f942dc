"""The server benchmark's table (measure | old | ours | ratio, per setting of ours) and targets.

Ratios read as "times better": ours/old for rates, old/ours for latencies.
"""

from __future__ import annotations

from typing import Any


def labels(concurrency: int, requests: int) -> list[tuple[str, str]]:
    many = f"{concurrency} clients"
    hey = f"hey -c {concurrency} -n {requests}"
    return [
        ("seq_learn", "sequential learn, hey -c 1"),
        ("seq_predict", "sequential predict, hey -c 1"),
        ("conc_learn", f"{many} learn, {hey}"),
        ("conc_predict", f"{many} predict, {hey}"),
    ]


def _rate(a: float, b: float) -> str:
    return f"{b / a:.1f}x" if a > 0 else ""


def _lat(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else ""


def summarise(
    m: dict[str, Any], sides: list[str], concurrency: int, requests: int
) -> tuple[list[list[str]], dict[str, Any]]:
    """Rows: [measure, old, then (value, ratio) for each of our settings]; targets per setting."""
    old, inproc = m["old"], m["inprocess"]
    rows: list[list[str]] = []

    def row(label: str, old_text: str, cells: list[str]) -> None:
        rows.append([label, old_text, *cells])

    for key, label in labels(concurrency, requests):
        cells: list[str] = []
        for side in sides:
            cells += [
                f"{m[side][key]['req_per_s']:,.0f}",
                _rate(old[key]["req_per_s"], m[side][key]["req_per_s"]),
            ]
        row(f"{label}: req/s", f"{old[key]['req_per_s']:,.0f}", cells)
        for pct in ("p50_ms", "p99_ms"):
            cells = []
            for side in sides:
                cells += [f"{m[side][key][pct]:.1f}", _lat(old[key][pct], m[side][key][pct])]
            row(f"{label}: {pct[:3]} ms", f"{old[key][pct]:.1f}", cells)
    for kind in ("learn", "predict"):
        key = f"riverapi_{kind}_per_s"
        cells = []
        for side in sides:
            cells += [f"{m[side][key]:,.0f}", _rate(old[key], m[side][key])]
        row(f"sequential {kind}, riverapi client: calls/s", f"{old[key]:,.0f}", cells)

    def kept(d: dict[str, Any]) -> str:
        k = d["learns_kept"]
        return f"{k['kept']} / {k['acknowledged']}"

    cells = []
    for side in sides:
        cells += [kept(m[side]), ""]
    row(f"learns kept after the {concurrency}-client runs (kept / 2xx)", kept(old), cells)

    best_old = max(old["conc_learn"]["req_per_s"], old["seq_learn"]["req_per_s"])
    cells = []
    for side in sides:
        b = m[side]["batch_learn"]["samples_per_s"]
        cells += [f"{b:,.0f}", _rate(best_old, b)]
    row("learn samples/s, best path (old: 1 per request; ours: batch)", f"{best_old:,.0f}", cells)
    for key, label in (
        ("learn_one_per_s", "river in-process learn_one (the limit)"),
        ("progressive_per_s", "river in-process predict + metrics + learn_one"),
    ):
        cells = []
        for side in sides:
            b = m[side]["batch_learn"]["samples_per_s"]
            cells += [f"{inproc[key]:,.0f}", f"batch = {b / inproc[key]:.2f} of it"]
        row(f"{label}: samples/s", "", cells)

    targets: dict[str, Any] = {}
    for side in sides:
        s = m[side]
        targets[side] = {
            "concurrent_learn_10x": s["conc_learn"]["req_per_s"]
            >= 10 * old["conc_learn"]["req_per_s"],
            "concurrent_predict_10x": s["conc_predict"]["req_per_s"]
            >= 10 * old["conc_predict"]["req_per_s"],
            "p99_under_10ms": max(s["conc_learn"]["p99_ms"], s["conc_predict"]["p99_ms"]) < 10.0,
            "zero_learns_lost": s["learns_kept"]["kept"]
            == s["learns_kept"]["acknowledged"]
            == s["learns_kept"]["sent"]
            and s["batch_learn"]["all_learned"],
            "batch_within_2x_of_inprocess": inproc["learn_one_per_s"]
            <= 2 * s["batch_learn"]["samples_per_s"],
        }
    return rows, targets


def render(rows: list[list[str]], sides: list[str]) -> str:
    """A Markdown table."""
    header = ["measure", "old (django-river-ml)"]
    for side in sides:
        header += [f"ours (--sync {side.removeprefix('ours-')})", "ratio"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
