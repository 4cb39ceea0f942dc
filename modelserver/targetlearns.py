"""``POST /api/learn/targets/``: one sample with several targets, each to its own models.

A trial of a multi-target sweep measures, say, the pressure, the potential energy and the CPU
time of one run; each is learned by different models. This view takes them in one request
(:class:`~streamml.vocabulary.wire.TargetsLearnRequest`) and hands each target to the single
learn path (:meth:`Learns.learn`) with the request's identifier, so the guarantees are the single
learn's, per model: a re-sent request learns nothing twice (each model already holding the
identifier answers ``duplicate``), and a commit that fails half-way is completed by the resend.

Before anything is applied every model of every target is looked up (an unknown one is a 404
naming it, nothing learned). A target whose every model refuses its value is listed with the
reason; only when every target is refused is the reply an error (nothing was applied).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamml.errors import SpecError
from streamml.modelserver.appkeys import SERVICE
from streamml.modelserver.views import parse, reply
from streamml.vocabulary.wire import TargetsLearnRequest


async def learn_targets(request: web.Request) -> web.Response:
    body = await parse(request, TargetsLearnRequest)
    service = request.app[SERVICE]
    for group in body.targets:  # every name known before the first learn
        service.registry.targets(None, group.models)
    results: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    for group in body.targets:
        try:
            results |= await service.learn(
                body.features, group.ground_truth, models=group.models, identifier=body.identifier
            )
        except SpecError as exc:
            refused.append(f"target {group.name!r}: {exc}")
            for model in group.models:
                results[model] = {"learned": False, "duplicate": False, "error": str(exc)}
    if len(refused) == len(body.targets):
        raise SpecError("; ".join(refused), field="targets")
    learned = any(r["learned"] for r in results.values())
    return reply({"results": results}, status=201 if learned else 200)
