"""A real Kubernetes control plane on loopback: etcd + kube-apiserver (+ kube-controller-manager).

This is what controller-runtime's envtest does, without Docker and without a kubelet: the
binaries (built by :mod:`streamml.testbed.k8sbuild`) run as local processes on free ports of
127.0.0.1, with a private CA, RBAC authorization and an admin kubeconfig. Nothing ever runs a Pod.

::

    with ControlPlane() as cp:                        # temporary workdir, removed on stop
        cp.kubectl("get", "namespaces")
        alice = cp.user_kubeconfig("alice")            # an RBAC user with no permissions
        op = cp.service_account_kubeconfig("ns", "op") # a ServiceAccount token (TokenRequest)

``streamml cluster up`` uses the same class with ``detached=True`` and a state directory; the
daemons then outlive the command and ``cluster down`` stops them by PID from ``state.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from streamml import procs
from streamml.errors import InfrastructureError
from streamml.testbed import k8sflags, kubeconfig, pki
from streamml.testbed.k8sbuild import Binaries, ensure_binaries

logger = logging.getLogger(__name__)

ADMIN_USER = "streamml-admin"
STATE_FILE = "state.json"
#: what a ControlPlane creates inside its workdir (and removes again on stop)
_OWNED = ("pki", "etcd-data", "logs", "kubeconfigs", "kubectl-cache", "kubeconfig", STATE_FILE)
_PORT_ATTEMPTS = 3


class KubectlError(InfrastructureError):
    """kubectl exited non-zero; ``result`` holds its output."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        argv = " ".join(str(a) for a in result.args)
        super().__init__(f"`{argv}` exited {result.returncode}: {result.stderr.strip()}")
        self.result = result


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) as local processes."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        with_controller_manager: bool = True,
        detached: bool = False,
        binaries: Binaries | None = None,
        apiserver_args: tuple[str, ...] = (),
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="streamml-k8s-")).resolve()
        self.with_controller_manager = with_controller_manager
        self.detached = detached
        self._binaries = binaries
        #: extra kube-apiserver flags (e.g. an egress selector for a test's service proxy)
        self.apiserver_args = apiserver_args
        self.server = ""
        self.daemons: list[procs.Daemon] = []
        self._popens: dict[int, subprocess.Popen[bytes]] = {}

    # -- paths and identities ------------------------------------------------------------------

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = ensure_binaries()
        return self._binaries

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (``system:masters``)."""
        return self.workdir / "kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

    @property
    def env(self) -> dict[str, str]:
        """Environment in which ``kubectl`` (ours, first on PATH) talks to this cluster as admin."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.binaries.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            # kubectl's discovery cache and kuberc default to ~/.kube: keep runs apart.
            "KUBECACHEDIR": str(self.workdir / "kubectl-cache"),
            "KUBERC": "off",
        }

    def _ca(self) -> pki.KeyPair:
        return pki.KeyPair(
            (self.pki_dir / "ca.crt").read_bytes(), (self.pki_dir / "ca.key").read_bytes()
        )

    def user_kubeconfig(
        self, user: str, groups: tuple[str, ...] = (), *, namespace: str | None = None
    ) -> Path:
        """A kubeconfig for an RBAC user (client certificate); it may do only what it is granted."""
        pair = pki.client_cert(self._ca(), user, groups)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        doc = kubeconfig.kubeconfig(
            self.server,
            self._ca().cert,
            user,
            client_cert=pair.cert,
            client_key=pair.key,
            namespace=namespace,
        )
        return kubeconfig.write(self.workdir / "kubeconfigs" / f"user-{safe}.yaml", doc)

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, create: bool = True, duration: str = "2h"
    ) -> Path:
        """A kubeconfig holding a token of ServiceAccount ``namespace/name`` (TokenRequest API)."""
        if create:
            exists = self.kubectl("get", "serviceaccount", name, "-n", namespace, check=False)
            if exists.returncode != 0:
                self.kubectl("create", "serviceaccount", name, "-n", namespace)
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        user = f"system:serviceaccount:{namespace}:{name}"
        doc = kubeconfig.kubeconfig(
            self.server, self._ca().cert, user, token=token, namespace=namespace
        )
        return kubeconfig.write(self.workdir / "kubeconfigs" / f"sa-{namespace}-{name}.yaml", doc)

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the project's kubectl against this cluster (admin unless ``kubeconfig`` is given)."""
        argv = [str(self.binaries.kubectl), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = procs.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(result)
        return result

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def running(self) -> bool:
        return bool(self.daemons) and all(d.alive() for d in self.daemons)

    def start(self, timeout: float = 180.0) -> Self:
        """Start every daemon and wait until the API server is ready; cleans up on failure."""
        binaries = self.binaries
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_pki()
            etcd_url = self._start_with_free_ports(self._start_etcd, timeout)
            self._start_with_free_ports(lambda t: self._start_apiserver(etcd_url, t), timeout)
            kubeconfig.write(
                self.kubeconfig,
                kubeconfig.kubeconfig(
                    self.server,
                    self._ca().cert,
                    ADMIN_USER,
                    client_cert=(self.pki_dir / "admin.crt").read_bytes(),
                    client_key=(self.pki_dir / "admin.key").read_bytes(),
                ),
            )
            if self.with_controller_manager:
                self._start_controller_manager(timeout)
            self._save_state()
        except BaseException:
            self.stop()
            raise
        logger.info("control plane v%s ready at %s", binaries.version, self.server)
        return self

    def stop(self) -> None:
        """Stop the daemons (last started first) and remove what this object created."""
        for daemon in reversed(self.daemons):
            procs.stop(daemon, self._popens.get(daemon.pid))
        self.daemons, self._popens = [], {}
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            return
        for name in _OWNED:
            path = self.workdir / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if self.workdir.exists() and not any(self.workdir.iterdir()):
            self.workdir.rmdir()

    # -- state for `cluster up` / `cluster down` -----------------------------------------------

    def _save_state(self) -> None:
        state = {
            "version": self.binaries.version,
            "bin_dir": str(self.binaries.bin_dir),
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "with_controller_manager": self.with_controller_manager,
            "daemons": [d.to_json() for d in self.daemons],
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def attach(cls, workdir: Path) -> ControlPlane:
        """The control plane whose state is in ``workdir`` (as written by ``start``)."""
        path = Path(workdir) / STATE_FILE
        try:
            state: dict[str, Any] = json.loads(path.read_text())
            version, bin_dir = str(state["version"]), Path(state["bin_dir"])
            cp = cls(
                Path(workdir),
                with_controller_manager=bool(state["with_controller_manager"]),
                detached=True,
                binaries=Binaries(version, bin_dir),
            )
            cp.server = str(state["server"])
            cp.daemons = [procs.Daemon.from_json(d) for d in state["daemons"]]
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InfrastructureError(f"unreadable control-plane state {path}: {exc}") from exc
        return cp

    # -- daemons -------------------------------------------------------------------------------

    def _write_pki(self) -> None:
        self.pki_dir.mkdir(parents=True, exist_ok=True)
        self.pki_dir.chmod(0o700)
        ca = pki.new_ca()
        serving = pki.serving_cert(ca)
        admin = pki.client_cert(ca, ADMIN_USER, ("system:masters",))
        kcm = pki.client_cert(ca, "system:kube-controller-manager")
        sa_private, sa_public = pki.service_account_key()
        files = {
            "ca.crt": ca.cert,
            "ca.key": ca.key,
            "apiserver.crt": serving.cert,
            "apiserver.key": serving.key,
            "admin.crt": admin.cert,
            "admin.key": admin.key,
            "controller-manager.crt": kcm.cert,
            "controller-manager.key": kcm.key,
            "sa.key": sa_private,
            "sa.pub": sa_public,
        }
        for name, data in files.items():
            path = self.pki_dir / name
            path.write_bytes(data)
            path.chmod(0o600)

    def _spawn(self, name: str, argv: list[str]) -> procs.Daemon:
        daemon, popen = procs.spawn(
            name, argv, self.workdir / "logs" / f"{name}.log", detached=self.detached
        )
        self.daemons.append(daemon)
        self._popens[daemon.pid] = popen
        return daemon

    def _start_with_free_ports(self, start: Callable[[float], str], timeout: float) -> str:
        # Free ports are picked, then bound by the daemon a moment later: another test run may
        # take one in between. The daemon then exits with "address already in use": try again.
        for attempt in range(_PORT_ATTEMPTS):
            try:
                return start(timeout)
            except _PortTaken:
                logger.info("port taken, retrying (%d/%d)", attempt + 1, _PORT_ATTEMPTS)
        raise InfrastructureError(f"no free ports on 127.0.0.1 after {_PORT_ATTEMPTS} attempts")

    def _start_etcd(self, timeout: float) -> str:
        client, peer = procs.free_port(), procs.free_port()
        data = self.workdir / "etcd-data"
        shutil.rmtree(data, ignore_errors=True)
        daemon = self._spawn("etcd", k8sflags.etcd_argv(self.binaries.etcd, data, client, peer))
        client_url = f"http://127.0.0.1:{client}"
        self._wait(daemon, lambda: _http_ok(f"{client_url}/health"), timeout)
        return client_url

    def _start_apiserver(self, etcd_url: str, timeout: float) -> str:
        port = procs.free_port()
        argv = k8sflags.apiserver_argv(self.binaries.kube_apiserver, self.pki_dir, etcd_url, port)
        argv += self.apiserver_args
        daemon = self._spawn("kube-apiserver", argv)
        self.server = f"https://127.0.0.1:{port}"
        context = self._admin_ssl_context()
        self._wait(daemon, lambda: _http_ok(f"{self.server}/readyz", context), timeout)
        return self.server

    def _start_controller_manager(self, timeout: float) -> None:
        p = self.pki_dir
        kcm_config = kubeconfig.write(
            self.workdir / "kubeconfigs" / "controller-manager.yaml",
            kubeconfig.kubeconfig(
                self.server,
                self._ca().cert,
                "system:kube-controller-manager",
                client_cert=(p / "controller-manager.crt").read_bytes(),
                client_key=(p / "controller-manager.key").read_bytes(),
            ),
        )
        argv = k8sflags.controller_manager_argv(
            self.binaries.kube_controller_manager, p, kcm_config
        )
        daemon = self._spawn("kube-controller-manager", argv)
        # Ready when it has done visible work: the serviceaccount controller gave the default
        # namespace its ServiceAccount.
        self._wait(
            daemon,
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            timeout,
        )

    def _admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        context.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return context

    def _wait(self, daemon: procs.Daemon, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not daemon.alive():
                tail = daemon.log_tail()
                self.daemons.remove(daemon)
                popen = self._popens.pop(daemon.pid, None)
                if popen is not None:
                    popen.wait()
                if "address already in use" in tail:
                    raise _PortTaken(daemon.name)
                raise InfrastructureError(f"{daemon.name} exited during start-up:\n{tail}")
            if ready():
                return
            time.sleep(0.25)
        raise InfrastructureError(
            f"{daemon.name} not ready after {timeout:.0f} s; log {daemon.log}:\n{daemon.log_tail()}"
        )


class _PortTaken(Exception):
    pass


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
