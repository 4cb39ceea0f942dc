"""The pure parts of the browser harness: Chromium's command line and the net-log reading that
the no-outbound-connection test relies on (it must catch a foreign peer when there is one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamml.testbed import netlog
from streamml.testbed.browser import QUIET_FLAGS, chromium_argv

TYPES = {"TCP_CONNECT_ATTEMPT": 1, "UDP_CONNECT": 2, "UDP_BYTES_SENT": 3, "REQUEST_ALIVE": 4}
SOURCES = {"TCP_CONNECT_JOB": 10, "UDP_SOCKET": 11, "URL_REQUEST": 12}


def _log(*events: tuple[str, str, int, dict[str, Any]]) -> dict[str, Any]:
    return {
        "constants": {"logEventTypes": TYPES, "logSourceType": SOURCES},
        "events": [
            {"type": TYPES[kind], "source": {"id": sid, "type": SOURCES[src]}, "params": params}
            for kind, src, sid, params in events
        ],
    }


def test_a_foreign_tcp_peer_is_reported() -> None:
    log = _log(
        ("TCP_CONNECT_ATTEMPT", "TCP_CONNECT_JOB", 1, {"address": "127.0.0.1:8080"}),
        ("TCP_CONNECT_ATTEMPT", "TCP_CONNECT_JOB", 2, {"address": "203.0.113.7:443"}),
    )
    assert netlog.summarize(log).non_loopback_peers == {"203.0.113.7:443"}


def test_the_ipv6_probe_is_set_apart_but_a_byte_sent_on_it_counts() -> None:
    probe = ("UDP_CONNECT", "UDP_SOCKET", 5, {"address": netlog.IPV6_PROBE})
    quiet = netlog.summarize(_log(probe))
    assert quiet.non_loopback_peers == set() and quiet.udp_probes == {netlog.IPV6_PROBE}
    assert quiet.bytes_sent_elsewhere == 0
    sent = ("UDP_BYTES_SENT", "UDP_SOCKET", 5, {"byte_count": 12})
    assert netlog.summarize(_log(probe, sent)).bytes_sent_elsewhere == 12


def test_the_probe_address_over_tcp_is_a_peer() -> None:
    log = _log(("TCP_CONNECT_ATTEMPT", "TCP_CONNECT_JOB", 1, {"address": netlog.IPV6_PROBE}))
    assert netlog.summarize(log).non_loopback_peers == {netlog.IPV6_PROBE}


def test_failed_requests_are_named() -> None:
    log = _log(
        ("REQUEST_ALIVE", "URL_REQUEST", 7, {"url": "http://x.example.invalid/"}),
        ("REQUEST_ALIVE", "URL_REQUEST", 7, {"net_error": -130}),
        ("REQUEST_ALIVE", "URL_REQUEST", 8, {"url": "http://127.0.0.1:1/"}),
    )
    summary = netlog.summarize(log)
    assert summary.urls == {"http://x.example.invalid/", "http://127.0.0.1:1/"}
    assert summary.failed_urls == {"http://x.example.invalid/"}


def test_a_log_cut_short_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "net.json"
    path.write_text('{"constants": {}, "events": [{"type": 1},\n')
    assert netlog.load_net_log(path)["events"] == [{"type": 1}]


def test_argv_reaches_only_loopback(tmp_path: Path) -> None:
    argv = chromium_argv("/usr/lib/chromium/chromium", tmp_path, dead_proxy_port=4321)
    assert "--proxy-server=http://127.0.0.1:4321" in argv
    assert "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" in argv
    assert "--remote-debugging-address=127.0.0.1" in argv
    assert f"--user-data-dir={tmp_path}" in argv
    assert set(QUIET_FLAGS) <= set(argv)
    assert "--disable-background-networking" in argv and "--disable-component-update" in argv
    assert not any(a.startswith("--log-net-log") for a in argv)
    logged = chromium_argv("chromium", tmp_path, dead_proxy_port=1, net_log=tmp_path / "n.json")
    assert f"--log-net-log={tmp_path / 'n.json'}" in logged
