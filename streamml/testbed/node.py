"""A real single-node Kubernetes: the control plane plus kubelet, containerd, CNI, kube-proxy,
cluster DNS, an ingress controller and a storage class, all inside a network namespace.

Every daemon runs under ``nsenter --net=/run/netns/streamml-node`` (only the network namespace:
kubelet and containerd must share the host's mounts). The host reaches the cluster through two
relays (:mod:`streamml.testbed.noderelay`): a 127.0.0.1 port forwarded over a unix socket to the
API server and another to the ingress; there is no IP route between the host and the node.

::

    with NodeCluster() as node:                   # temporary workdir, everything undone on stop
        node.kubectl("get", "nodes")              # through the 127.0.0.1 relay
        node.ingress_url                          # http://127.0.0.1:PORT -> Traefik

``streamml cluster up --node`` runs one detached; ``cluster down`` undoes it from ``state.json``.
One node per host at a time (the namespace name is fixed; host-wide paths are shared).
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any, Self

from streamml import procs
from streamml.errors import InfrastructureError
from streamml.pycommand import python_module
from streamml.testbed import k8sflags, kubeconfig, nodeflags, nodehost, nodeimages, pki
from streamml.testbed.controlplane import ADMIN_USER, STATE_FILE, ControlPlane, _http_ok
from streamml.testbed.nodebuild import GoTarget, coredns_target, ensure, node_target, traefik_target
from streamml.testbed.noderelay import relay_argvs

logger = logging.getLogger(__name__)

#: identities with their own client certificate (user, groups)
IDENTITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "controller-manager": ("system:kube-controller-manager", ()),
    "scheduler": ("system:kube-scheduler", ()),
    "kube-proxy": ("system:kube-proxy", ()),
    "kubelet": (f"system:node:{nodeflags.NODE_NAME}", ("system:nodes",)),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
    "coredns": ("streamml:coredns", ()),
    "traefik": ("streamml:traefik", ()),
    "provisioner": ("streamml:provisioner", ()),
}
MANIFESTS = Path(__file__).resolve().parent / "nodeimage" / "cluster.yaml"


class NodeCluster(ControlPlane):
    """The control plane and a real node in their own network namespace."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        detached: bool = False,
        with_ingress: bool = True,
        with_kubelet: bool = True,
    ) -> None:
        super().__init__(workdir, with_controller_manager=True, detached=detached)
        #: run kubelet, kube-proxy and kube-scheduler (False: the control plane, containerd and
        #: the add-ons in the namespace, no pod ever runs; for tests before the node is built)
        self.with_kubelet = with_kubelet
        #: run Traefik (False: a node without an ingress controller, e.g. before Traefik is built)
        self.with_ingress = with_ingress
        self.ingress_url = ""
        self.host_before: dict[str, Any] = {}
        self._node_bins: dict[str, Path] = {}

    @property
    def node_dir(self) -> Path:
        return self.workdir / "node"

    @property
    def containerd_socket(self) -> Path:
        return self.node_dir / "containerd" / "containerd.sock"

    # -- build --------------------------------------------------------------------------------

    def _ensure_node_binaries(self) -> None:
        wanted = [node_target(), coredns_target()] if self.with_kubelet else [coredns_target()]
        if self.with_ingress:
            wanted.append(traefik_target())
        found: list[GoTarget] = [ensure(t) for t in wanted]
        for target in found:
            for name in target.packages:
                self._node_bins[name] = target.path(name)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 300.0) -> Self:
        _ = self.binaries
        self._ensure_node_binaries()
        images = nodeimages.ensure_images()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host_before = {
            "sysctls": nodehost.read_sysctls(),
            "paths": nodehost.existing_paths(),
            "cgroups": nodehost.cgroups_present(),
            "netns_dir": nodehost.netns_dir_state(),
        }
        nodehost.create_netns(nodeflags.NODE_IP, k8sflags.SERVICE_CLUSTER_IP_RANGE)
        self._save_state()
        try:
            self._write_pki()
            self._start_relays()
            self._start_etcd(timeout)
            self._start_apiserver_in_netns(timeout)
            self._write_kubeconfigs()
            self._start_controller_manager(timeout)
            if self.with_kubelet:
                scheduler = self._node_bins["kube-scheduler"]
                self._spawn(
                    "kube-scheduler", nodeflags.scheduler_argv(scheduler, self._kc("scheduler"))
                )
            self.kubectl("apply", "-f", str(MANIFESTS))
            self._start_containerd(images, timeout)
            if self.with_kubelet:
                self._start_kubelet(timeout)
            self._start_addons(timeout)
            self._save_state()
        except BaseException:
            self.stop()
            raise
        logger.info(
            "node %s ready; API %s, ingress %s", nodeflags.NODE_NAME, self.server, self.ingress_url
        )
        return self

    def stop(self) -> None:
        """Stop every daemon and pod, unmount, remove what was created, restore host settings."""
        from streamml.testbed import nodestop

        nodestop.teardown(self)
        super().stop()

    # -- state --------------------------------------------------------------------------------

    def _save_state(self) -> None:
        state = {
            "node": True,
            "version": self.binaries.version,
            "bin_dir": str(self.binaries.bin_dir),
            "server": self.server,
            "ingress_url": self.ingress_url,
            "kubeconfig": str(self.kubeconfig),
            "with_controller_manager": True,
            "with_ingress": self.with_ingress,
            "with_kubelet": self.with_kubelet,
            "host_before": self.host_before,
            "daemons": [d.to_json() for d in self.daemons],
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def attach(cls, workdir: Path) -> NodeCluster:
        state = json.loads((Path(workdir) / STATE_FILE).read_text())
        node = cls(
            Path(workdir),
            detached=True,
            with_ingress=bool(state.get("with_ingress", True)),
            with_kubelet=bool(state.get("with_kubelet", True)),
        )
        from streamml.testbed.k8sbuild import Binaries

        node._binaries = Binaries(str(state["version"]), Path(state["bin_dir"]))
        node.server = str(state["server"])
        node.ingress_url = str(state.get("ingress_url", ""))
        node.host_before = dict(state.get("host_before", {}))
        node.daemons = [procs.Daemon.from_json(d) for d in state["daemons"]]
        return node

    # -- daemons ------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> procs.Daemon:
        daemon, popen = procs.spawn(
            name,
            [*nodehost.nsenter(), *argv],
            self.workdir / "logs" / f"{name}.log",
            detached=self.detached,
            env=env,
        )
        self.daemons.append(daemon)
        self._popens[daemon.pid] = popen
        self._save_state()
        return daemon

    def _write_pki(self) -> None:
        super()._write_pki()
        ca = self._ca()
        # the API server is reached at the relay (127.0.0.1), the node address and, from pods,
        # the `kubernetes` Service's cluster IP; kubelet's serving certificate is signed by the
        # same CA, so the API server verifies it (--kubelet-certificate-authority)
        names = ("127.0.0.1", nodeflags.NODE_IP, _first_service_ip())
        pairs = {
            "apiserver": pki.serving_cert(ca, ips=names),
            "kubelet-serving": pki.serving_cert(ca, ips=(nodeflags.NODE_IP,)),
        }
        for stem, (user, groups) in IDENTITIES.items():
            pairs[stem] = pki.client_cert(ca, user, groups)
        for stem, pair in pairs.items():
            for suffix, data in ((".crt", pair.cert), (".key", pair.key)):
                path = self.pki_dir / f"{stem}{suffix}"
                path.write_bytes(data)
                path.chmod(0o600)

    def _kc(self, stem: str) -> Path:
        return self.workdir / "kubeconfigs" / f"{stem}.yaml"

    def _write_kubeconfigs(self) -> None:
        inside = f"https://{nodeflags.NODE_IP}:{nodeflags.APISERVER_PORT}"
        ca = self._ca().cert
        for stem, (user, _groups) in IDENTITIES.items():
            doc = kubeconfig.kubeconfig(
                inside,
                ca,
                user,
                client_cert=(self.pki_dir / f"{stem}.crt").read_bytes(),
                client_key=(self.pki_dir / f"{stem}.key").read_bytes(),
            )
            kubeconfig.write(self._kc(stem), doc)
        admin = kubeconfig.kubeconfig(
            self.server,
            ca,
            ADMIN_USER,
            client_cert=(self.pki_dir / "admin.crt").read_bytes(),
            client_key=(self.pki_dir / "admin.key").read_bytes(),
        )
        kubeconfig.write(self.kubeconfig, admin)

    def _start_relays(self) -> None:
        relay_dir = self.workdir / "relay"
        relay_dir.mkdir(parents=True, exist_ok=True)
        for name, target in (
            ("api", f"{nodeflags.NODE_IP}:{nodeflags.APISERVER_PORT}"),
            ("ingress", f"{nodeflags.NODE_IP}:{nodeflags.INGRESS_PORT}"),
        ):
            port = procs.free_port()
            inside, outside = relay_argvs(relay_dir / f"{name}.sock", target, port)
            self._spawn(f"relay-{name}-inside", inside)
            daemon, popen = procs.spawn(
                f"relay-{name}-host",
                outside,
                self.workdir / "logs" / f"relay-{name}-host.log",
                detached=self.detached,
            )
            self.daemons.append(daemon)
            self._popens[daemon.pid] = popen
            if name == "api":
                self.server = f"https://127.0.0.1:{port}"
            else:
                self.ingress_url = f"http://127.0.0.1:{port}"

    def _start_etcd(self, timeout: float) -> str:
        data = self.workdir / "etcd-data"
        argv = k8sflags.etcd_argv(
            self.binaries.etcd, data, nodeflags.ETCD_CLIENT_PORT, nodeflags.ETCD_PEER_PORT
        )
        daemon = self._spawn("etcd", argv)
        health = f"http://127.0.0.1:{nodeflags.ETCD_CLIENT_PORT}/health"  # the namespace's loopback
        self._wait(daemon, lambda: _netns_http_ok(health), timeout)
        return f"http://127.0.0.1:{nodeflags.ETCD_CLIENT_PORT}"

    def _start_apiserver_in_netns(self, timeout: float) -> None:
        base = k8sflags.apiserver_argv(
            self.binaries.kube_apiserver, self.pki_dir, "", nodeflags.APISERVER_PORT
        )
        overrides = nodeflags.apiserver_node_flags(
            self.pki_dir, f"http://127.0.0.1:{nodeflags.ETCD_CLIENT_PORT}"
        )
        replaced = {flag.split("=", 1)[0] for flag in overrides}
        argv = [a for a in base if a.split("=", 1)[0] not in replaced] + overrides
        daemon = self._spawn("kube-apiserver", argv)
        context = self._admin_ssl_context()
        self._wait(daemon, lambda: _http_ok(f"{self.server}/readyz", context), timeout)

    def _start_controller_manager(self, timeout: float) -> None:
        argv = nodeflags.controller_manager_node_argv(
            self.binaries.kube_controller_manager, self.pki_dir, self._kc("controller-manager")
        )
        daemon = self._spawn("kube-controller-manager", argv)
        self._wait(
            daemon,
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            timeout,
        )

    def _start_containerd(self, images: Path, timeout: float) -> None:
        base = self.node_dir / "containerd"
        cni_conf = self.node_dir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-streamml.conflist").write_text(
            nodeflags.cni_conflist(self.node_dir / "cni" / "ipam")
        )
        config = base / "config.toml"
        base.mkdir(parents=True, exist_ok=True)
        config.write_text(
            nodeflags.containerd_config(
                base / "root", base / "state", self.containerd_socket, cni_conf
            )
        )
        daemon = self._spawn("containerd", ["containerd", f"--config={config}"])
        self._wait(daemon, lambda: self.ctr("version", check=False).returncode == 0, timeout)
        self.ctr("images", "import", str(images))

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """containerd's ``ctr`` against the node's containerd, in its ``k8s.io`` namespace."""
        argv = ["ctr", f"--address={self.containerd_socket}", "-n", "k8s.io", *args]
        result = procs.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if check and result.returncode:
            raise InfrastructureError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
        return result

    def _start_kubelet(self, timeout: float) -> None:
        resolv = self.node_dir / "resolv.conf"
        resolv.write_text(f"nameserver {nodeflags.NODE_IP}\n")
        config = self.node_dir / "kubelet.yaml"
        config.write_text(
            nodeflags.kubelet_config(self.pki_dir, resolv, self.node_dir / "pod-logs")
        )
        argv = nodeflags.kubelet_argv(
            self._node_bins["kubelet"],
            config,
            self._kc("kubelet"),
            self.node_dir / "kubelet",
            self.containerd_socket,
        )
        daemon = self._spawn("kubelet", argv)
        self._spawn("kube-proxy", self._kube_proxy_argv())
        self._wait(daemon, self.node_ready, timeout)

    def _kube_proxy_argv(self) -> list[str]:
        config = self.node_dir / "kube-proxy.yaml"
        config.write_text(nodeflags.kube_proxy_config(self._kc("kube-proxy")))
        return [str(self._node_bins["kube-proxy"]), f"--config={config}", "--v=1"]

    def node_ready(self) -> bool:
        out = self.kubectl(
            "get",
            "node",
            nodeflags.NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False,
        )
        return out.returncode == 0 and out.stdout.strip() == "True"

    def _start_addons(self, timeout: float) -> None:
        corefile = self.node_dir / "Corefile"
        user = IDENTITIES["coredns"][0]
        corefile.write_text(nodeflags.corefile(self._kc("coredns"), user))
        self._spawn("coredns", [str(self._node_bins["coredns"]), "-conf", str(corefile)])
        if self.with_ingress:
            env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(self._kc("traefik"))}
            self._spawn("traefik", nodeflags.traefik_argv(self._node_bins["traefik"]), env=env)
        argv = python_module(
            "streamml.testbed.localpv", str(self._kc("provisioner")), str(self.node_dir / "volumes")
        )
        self._spawn("local-provisioner", argv)
        deadline = time.monotonic() + timeout
        while not self._addons_ready():
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"cluster DNS or ingress controller not ready after {timeout:.0f} s"
                )
            time.sleep(0.5)

    def _addons_ready(self) -> bool:
        for daemon in self.daemons:
            if not daemon.alive():
                raise InfrastructureError(f"{daemon.name} exited:\n{daemon.log_tail()}")
        checks = ["http://127.0.0.1:8181/ready"]
        if self.with_ingress:
            checks.append("http://127.0.0.1:9000/ping")
        return all(_netns_http_ok(url) for url in checks)


def _first_service_ip() -> str:
    import ipaddress

    return str(next(ipaddress.ip_network(k8sflags.SERVICE_CLUSTER_IP_RANGE).hosts()))


def _netns_http_ok(url: str) -> bool:
    """GET ``url`` from inside the node's namespace (its own 127.0.0.1 or the node address)."""
    argv = [*nodehost.nsenter(), "curl", "-sf", "-o", "/dev/null", "--max-time", "2", url]
    return procs.run(argv, capture_output=True, check=False, timeout=30).returncode == 0
