"""``POST /api/learn/targets/``: one sample with several targets, each to its own models.

A trial of a multi-target sweep measures, say, the pressure, the potential energy and the CPU
time of one run; each is learned by different models. This view takes them in one request
(:class:`~streamml.vocabulary.wire.TargetsLearnRequest`) and learns them as ONE learn whose
models each get their own target's value (:meth:`Learns.learn` with ``truths``): one write, one
commit, so the single learn's guarantees hold for the whole request. An error reply means that
no target was learned; a re-sent request learns nothing twice (each model already holding the
identifier answers ``duplicate``). Every model is looked up before anything is applied (an
unknown one is a 404 naming it). A model that refuses its value is listed with the reason; only
when every model refuses is the reply an error.
"""

from __future__ import annotations

from aiohttp import web

from streamml.errors import SpecError
from streamml.modelserver.appkeys import SERVICE
from streamml.modelserver.views import parse, reply
from streamml.vocabulary.wire import TargetsLearnRequest


async def learn_targets(request: web.Request) -> web.Response:
    body = await parse(request, TargetsLearnRequest)
    truths = {model: group.ground_truth for group in body.targets for model in group.models}
    try:
        results = await request.app[SERVICE].learn(
            body.features,
            None,
            models=list(truths),
            identifier=body.identifier,
            truths=truths,
            provenance=body.provenance,
        )
    except SpecError as exc:  # every model refused its value: nothing was applied
        raise SpecError(str(exc), field="targets") from None
    learned = any(r["learned"] for r in results.values())
    return reply({"results": results}, status=201 if learned else 200)
