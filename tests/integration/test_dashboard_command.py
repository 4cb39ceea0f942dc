"""``streamml dashboard --streammodel NAME``: a local browser URL for a StreamModel's dashboard.

Real kube-apiserver, real ``streamml dashboard`` process, real model server, real Chromium:

- a StreamModel served on this machine (local runtime: loopback ``status.address``) gets its
  own ``/dashboard/`` printed, and that page answers (login first);
- an in-cluster StreamModel gets a relay on 127.0.0.1 through the API server's service proxy
  with the kubeconfig's credentials: the API server authorizes and looks up exactly that
  Service (without a ready endpoint it answers 404), a foreign Host or Origin is refused, and a
  user without ``services/proxy`` is told what to grant;
- the whole path in a browser: relay -> kube-apiserver's service proxy -> the model server,
  with the API server's cluster egress (``--egress-selector-config-file``) an HTTP CONNECT
  tunnel on a Unix socket to the local server instead of a pod network (the API server refuses
  loopback endpoints; the pod IP is a made-up name nothing is sent to): login, redirects,
  HttpOnly cookie, the event stream;
- the relay alone carries the same to a browser with the server as its upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamml.clients.dashboard_relay import DashboardRelay, Upstream
from streamml.pycommand import python_code, streamml_command
from streamml.testbed.browser import Page
from streamml.testbed.controlplane import ControlPlane
from streamml.vocabulary import crdgen
from tests.fixtures.server import ServerProcess, running_server
from tests.integration.test_watch_streammodel import (  # one copy of both
    crds_installed,  # noqa: F401 (a fixture: used by name)
    streammodel_with_status,
)

READ_USER, READ_TOKEN = "viewer", "a-read-only-token-0123456789abcdef"


def _service(cp: ControlPlane, ns: str, name: str) -> None:
    """The Service the operator would create (operator/builders.py: one port named http)."""
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"app.kubernetes.io/instance": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(body))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("STREAMML_", "KUBECONFIG"))}


def _dashboard(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [*streamml_command(), "dashboard", "--kubeconfig", str(kubeconfig), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=_env())


@pytest.fixture
def relay_process() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def _start_relay(
    started: list[subprocess.Popen[str]], kubeconfig: Path, *args: str
) -> tuple[subprocess.Popen[str], list[str]]:
    """``streamml dashboard`` running: its process and its lines up to the ``dashboard:`` one."""
    argv = [*streamml_command(), "dashboard", "--kubeconfig", str(kubeconfig), *args]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    )
    started.append(process)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            seen.append(lines.get(timeout=1.0))
            if seen[-1].startswith("dashboard: "):
                return process, seen
    raise AssertionError(f"no dashboard URL from streamml dashboard: {seen}")


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@pytest.mark.usefixtures("crds_installed")
def test_a_streammodel_on_this_machine_gets_its_own_dashboard(
    control_plane: ControlPlane, k8s_namespace: str, model_server: ServerProcess
) -> None:
    streammodel_with_status(control_plane, k8s_namespace, "here", {"address": model_server.url})
    result = _dashboard(
        control_plane.kubeconfig, "--streammodel", "here", "--namespace", k8s_namespace
    )
    assert result.returncode == 0, result.stderr
    url = f"{model_server.url}/dashboard/"
    assert result.stdout.splitlines()[0] == f"dashboard: {url}"
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(url, timeout=30)
    assert answer.value.code == 303  # no session yet: to the login form
    assert answer.value.headers["Location"].endswith("/dashboard/login")


@pytest.mark.usefixtures("crds_installed")
def test_an_in_cluster_streammodel_is_relayed_through_the_service_proxy(
    control_plane: ControlPlane, k8s_namespace: str, relay_process: list[subprocess.Popen[str]]
) -> None:
    cp, ns = control_plane, k8s_namespace
    streammodel_with_status(cp, ns, "remote", {"address": f"http://remote.{ns}.svc:80"})
    _service(cp, ns, "remote")
    # a user who may proxy to exactly this Service's port (RBAC sees "http:remote:http")
    user = f"proxy-{ns}"
    for kind, resource, name in (
        ("sm", "streammodels.streamml.io", "remote"),
        ("proxy", "services/proxy", "http:remote:http"),
    ):
        cp.kubectl("create", "role", f"dash-{kind}", "-n", ns, "--verb=get", "--verb=create",
                   f"--resource={resource}", f"--resource-name={name}")  # fmt: skip
        cp.kubectl("create", "rolebinding", f"dash-{kind}", "-n", ns, f"--role=dash-{kind}",
                   f"--user={user}")  # fmt: skip
    kubeconfig = cp.user_kubeconfig(user)
    process, lines = _start_relay(
        relay_process, kubeconfig, "--streammodel", "remote", "--namespace", ns
    )
    url = lines[-1].removeprefix("dashboard: ")
    assert url.startswith("http://127.0.0.1:") and url.endswith("/dashboard/")
    # authorized for that Service, looked up by the API server: it has no ready endpoint (no
    # node runs the pod), which this API server reports as the Service not found
    assert any('services "remote" not found' in line for line in lines), lines
    status, body = _get(url)
    assert status == 404 and 'services \\"remote\\" not found' in body, body
    port = url.split(":")[2].split("/")[0]
    status, body = _get(url, {"Host": f"rebound.example:{port}"})
    assert status == 403 and "Host" in body
    status, body = _get(url, {"Origin": "http://evil.example"})
    assert status == 403 and "Origin" in body
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


@pytest.mark.usefixtures("crds_installed")
def test_a_user_who_may_not_proxy_is_told_what_to_grant(
    control_plane: ControlPlane, k8s_namespace: str
) -> None:
    cp, ns = control_plane, k8s_namespace
    streammodel_with_status(cp, ns, "guarded", {"address": f"http://guarded.{ns}.svc:80"})
    _service(cp, ns, "guarded")
    user = f"reader-{ns}"
    cp.kubectl("create", "role", "read-sm", "-n", ns, "--verb=get",
               "--resource=streammodels.streamml.io")  # fmt: skip
    cp.kubectl("create", "rolebinding", "read-sm", "-n", ns, "--role=read-sm", f"--user={user}")
    kubeconfig = cp.user_kubeconfig(user)
    result = _dashboard(kubeconfig, "--streammodel", "guarded", "--namespace", ns)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "services/proxy" in result.stderr and "403" in result.stderr
    missing = _dashboard(cp.kubeconfig, "--streammodel", "absent", "--namespace", ns)
    assert missing.returncode == 2
    assert f"StreamModel {ns}/absent not found" in missing.stderr


async def test_the_relay_carries_login_cookie_and_event_stream(page: Page, tmp_path: Path) -> None:
    with running_server(
        tmp_path / "server", "--auth-read-user", READ_USER, f"--auth-read-token={READ_TOKEN}"
    ) as server:
        async with DashboardRelay(Upstream(server.url)) as relay:
            await page.navigate(relay.url + "/dashboard/")
            assert await page.evaluate("location.pathname") == "/dashboard/login"
            await page.fill("#username", READ_USER)
            await page.fill("#token", READ_TOKEN)
            await page.submit("#login-form", navigates=True)
            message = await page.evaluate("document.body.innerText")
            assert await page.evaluate("location.href") == relay.url + "/dashboard/", message
            await page.wait_for("document.body.dataset.ready === 'true'")
            # the event stream reached the page through the relay
            await page.wait_for("document.getElementById('status').dataset.state === 'live'")
            [cookie] = [c for c in await page.cookies() if c.name == "streamml_session"]
            assert cookie.http_only and cookie.same_site == "Strict"
            assert cookie.domain == "127.0.0.1"


#: the API server's egress for cluster traffic: HTTP CONNECT over a Unix socket, every tunnel
#: handed to the one local server (the pod IP is only ever a name in the CONNECT line)
CONNECT_SHIM = """
import asyncio, sys
sock, port = sys.argv[1], int(sys.argv[2])

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

async def tunnel(reader, writer):
    head = await reader.readuntil(b"\\r\\n\\r\\n")
    print(head.split(b"\\r\\n")[0].decode(), flush=True)
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"HTTP/1.1 200 Connection established\\r\\n\\r\\n")
    await writer.drain()
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

async def main():
    server = await asyncio.start_unix_server(tunnel, sock)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""
EGRESS = """apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: {sock}
"""
POD_IP = "10.244.0.5"  # made up: no packet is ever sent to it (the shim only reads the name)


def _endpoints(cp: ControlPlane, ns: str, name: str) -> None:
    """A pod the API server believes in (its IP through the status subresource, as a kubelet
    would write it) behind a selectorless Service, as the endpoints controller would list it."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-0", "namespace": ns},
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "unused",
                    "ports": [{"name": "http", "containerPort": 8080}],
                }
            ]
        },
    }
    cp.kubectl("create", "serviceaccount", "default", "-n", ns, check=False)  # no controllers
    cp.kubectl("apply", "-f", "-", input=json.dumps(pod))
    cp.kubectl(
        "patch",
        "pod",
        f"{name}-0",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"podIP": POD_IP, "podIPs": [{"ip": POD_IP}]}}),
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(service))
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns},
        "subsets": [
            {
                "addresses": [
                    {
                        "ip": POD_IP,
                        "targetRef": {"kind": "Pod", "name": f"{name}-0", "namespace": ns},
                    }
                ],
                "ports": [{"name": "http", "port": 8080}],
            }
        ],
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(endpoints))


@pytest.mark.controlplane
async def test_the_page_through_a_real_service_proxy(
    page: Page, tmp_path: Path, relay_process: list[subprocess.Popen[str]]
) -> None:
    """The whole path: browser -> relay -> kube-apiserver's service proxy -> (egress selector)
    -> the model server. Only the last hop differs from a cluster: the API server's cluster
    egress is a CONNECT tunnel to the local server instead of a pod network."""
    from streamml.testbed.k8sbuild import ensure_binaries

    sock = tmp_path / "egress.sock"
    config = tmp_path / "egress.yaml"
    config.write_text(EGRESS.format(sock=sock))
    flags = (f"--egress-selector-config-file={config}",)
    with (
        running_server(tmp_path / "server", "--auth-read-user", READ_USER,
                       f"--auth-read-token={READ_TOKEN}") as server,
        ControlPlane(tmp_path / "cp", with_controller_manager=False,
                     binaries=ensure_binaries(), apiserver_args=flags) as cp,
    ):  # fmt: skip
        shim = subprocess.Popen(python_code(CONNECT_SHIM, str(sock), str(server.port)),
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        relay_process.append(shim)  # stopped after the test, like the relay
        manifests = "---\n".join(crdgen.render(info) for info in crdgen.resources())
        cp.kubectl("apply", "--server-side", "-f", "-", input=manifests)
        for info in crdgen.resources():
            cp.kubectl("wait", "--for=condition=Established", f"crd/{info.crd_name}")
        streammodel_with_status(cp, "default", "sm", {"address": "http://sm.default.svc:80"})
        _endpoints(cp, "default", "sm")
        _, lines = await asyncio.to_thread(
            _start_relay, relay_process, cp.kubeconfig, "--streammodel", "sm"
        )
        assert not any(line.startswith("warning") for line in lines), lines  # /readyz: 200
        url = lines[-1].removeprefix("dashboard: ")
        relay = url.removesuffix("/dashboard/")
        await page.navigate(url)
        assert await page.evaluate("location.href") == relay + "/dashboard/login"
        await page.fill("#username", READ_USER)
        await page.fill("#token", READ_TOKEN)
        await page.submit("#login-form", navigates=True)
        assert await page.evaluate("location.href") == url
        await page.wait_for("document.body.dataset.ready === 'true'")
        await page.wait_for("document.getElementById('status').dataset.state === 'live'")
        [cookie] = [c for c in await page.cookies() if c.name == "streamml_session"]
        assert cookie.http_only and cookie.same_site == "Strict"
        shim.terminate()
        tunnels, _ = shim.communicate(timeout=30)
        assert f"CONNECT {POD_IP}:8080 HTTP/1.1" in tunnels
