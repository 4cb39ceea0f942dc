"""What a Chromium net log (``--log-net-log``) says about where the browser connected.

The net log is a JSON document: ``constants`` (numeric ids of event and source types) and
``events``, each with ``type``, ``source: {id, type}`` and ``params``. A socket's peer appears
in ``params.address`` (``TCP_CONNECT_ATTEMPT``, ``UDP_CONNECT``, ``SOCKET_CONNECT``),
``params.remote_address`` (``TCP_CONNECT``) or ``params.address_list`` (``TCP_CONNECT``);
bytes a socket sent are ``*_BYTES_SENT`` events of that socket's source; ``*_LOCAL_ADDRESS``
events name the socket's own end, not a peer.

One exception is named rather than hidden: Chromium's host resolver checks whether IPv6 is
reachable by ``connect()``-ing a UDP socket to Google's public DNS address
(``2001:4860:4860::8888``, port 443) and reading the route the kernel picked. A UDP ``connect``
sends no datagram, so :class:`NetLogSummary` keeps those sockets apart (``udp_probes``) and
counts any byte sent on them (``bytes_sent_elsewhere``), which must stay 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the address and port of the IPv6 reachability probe (net/dns/host_resolver_manager.cc)
IPV6_PROBE = "[2001:4860:4860::8888]:443"
_ADDRESS_KEYS = ("address", "remote_address")
_LOOPBACK_PREFIXES = ("127.", "[::1]")


@dataclass
class NetLogSummary:
    """The peers of every socket in one net log, and the URLs the browser asked for."""

    peers: set[str] = field(default_factory=set)
    udp_probes: set[str] = field(default_factory=set)
    bytes_sent_elsewhere: int = 0
    urls: set[str] = field(default_factory=set)
    failed_urls: set[str] = field(default_factory=set)

    @property
    def non_loopback_peers(self) -> set[str]:
        """Peers other than 127.0.0.0/8 and ::1 (the UDP reachability probe is not a peer)."""
        return {p for p in self.peers if not p.startswith(_LOOPBACK_PREFIXES)}


def load_net_log(path: Path) -> dict[str, Any]:
    """The net log's JSON; a log cut short (browser killed) is closed first."""
    text = path.read_text(errors="replace").rstrip()
    try:
        loaded: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        loaded = json.loads(text.rstrip(",") + "]}")
    return loaded


def _peers_of(params: dict[str, Any]) -> list[str]:
    found = [str(params[k]) for k in _ADDRESS_KEYS if k in params]
    found.extend(str(a) for a in params.get("address_list", []))
    return found


def summarize(log: dict[str, Any]) -> NetLogSummary:
    """Where the browser connected, per :class:`NetLogSummary`."""
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    source_types = {v: k for k, v in log["constants"]["logSourceType"].items()}
    summary = NetLogSummary()
    foreign_sources: set[int] = set()
    sent: dict[int, int] = {}
    request_urls: dict[int, str] = {}
    for event in log["events"]:
        kind = names.get(event["type"], "")
        source = int(event["source"]["id"])
        params = event.get("params") or {}
        udp = source_types.get(event["source"]["type"]) in ("UDP_SOCKET", "UDP_CLIENT_SOCKET")
        for peer in [] if kind.endswith("LOCAL_ADDRESS") else _peers_of(params):
            if peer == IPV6_PROBE and udp:
                summary.udp_probes.add(peer)
                foreign_sources.add(source)
                continue
            summary.peers.add(peer)
            if not peer.startswith(_LOOPBACK_PREFIXES):
                foreign_sources.add(source)
        if kind.endswith("BYTES_SENT"):
            sent[source] = sent.get(source, 0) + int(params.get("byte_count", 0))
        if kind == "REQUEST_ALIVE" and "url" in params:
            request_urls[source] = str(params["url"])
            summary.urls.add(str(params["url"]))
        elif (
            kind == "REQUEST_ALIVE"
            and int(params.get("net_error", 0)) < 0
            and source in request_urls
        ):
            summary.failed_urls.add(request_urls[source])
    summary.bytes_sent_elsewhere = sum(sent.get(s, 0) for s in foreign_sources)
    return summary
