"""A do-nothing aiohttp + uvloop JSON echo: the ceiling of the HTTP stack on this machine, now.

The server benchmark drives it like the model servers, in the same rounds, so a reader can tell
how much of a miss is the machine (shared, 2 cores, the load generator on them too) and how much
is the model server's own work. Run: python _echo_server.py PORT (127.0.0.1 only).
"""

from __future__ import annotations

import sys

import orjson
import uvloop
from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    payload = orjson.loads(await request.read())
    reply = {"model": payload.get("model"), "prediction": 0.0, "identifier": "echo"}
    return web.Response(body=orjson.dumps(reply), content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/api/predict/", echo)
    app.router.add_post("/api/learn/", echo)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
