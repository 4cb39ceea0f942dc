"""``GET /api/provenance/{model}[?by=KEY&limit=N]``: a model's samples split by origin.

Without ``by``: how many samples the model learned, how many said where they came from, and the
keys they used (each with its number of distinct values). With ``by=host`` (any key): per value
the count and the first and last sample index, the most frequent first, at most ``limit`` (100;
at most 1000). The index is read on the model's thread when it has one (a learn may be updating
it there), so the answer is a consistent one. Any credential may read it (read-only included).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamml.errors import SpecError
from streamml.modelserver.appkeys import SERVICE
from streamml.modelserver.learning import ModelState
from streamml.modelserver.views import checked_name, reply
from streamml.vocabulary.wire import PROVENANCE_KEY

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000


def _query(request: web.Request) -> tuple[str | None, int]:
    by = request.query.get("by")
    if by is not None and PROVENANCE_KEY.fullmatch(by) is None:
        raise SpecError(
            f"by={by[:40]!r}: a provenance key is lowercase letters, digits and '_' "
            "(at most 32), e.g. sweep, trial, attempt, image_digest, lammps_version, host",
            field="by",
        )
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 8) or not 1 <= int(raw) <= MAX_LIMIT:
        raise SpecError(f"limit={raw[:20]!r}: a whole number from 1 to {MAX_LIMIT}", field="limit")
    return by, int(raw)


def _answer(state: ModelState, by: str | None, limit: int) -> dict[str, Any]:
    origins = state.origins
    data: dict[str, Any] = {"model": state.name, "samples": state.learn_stats.n_calls}
    data.update(origins.summary())
    if by is not None:
        data.update(origins.by(by, limit=limit))
    return data


async def model_provenance(request: web.Request) -> web.Response:
    by, limit = _query(request)
    service = request.app[SERVICE]
    state = service.registry.get(checked_name(request.match_info["model"]))
    data = await service.workers.call(state.name, not state.heavy, _answer, state, by, limit)
    return reply(data)
