"""``streamml cluster build|up|down|env|status``: the local control plane from the command line.

``up`` starts etcd, kube-apiserver and kube-controller-manager detached (they outlive the
command) with their state, logs and kubeconfig in ``--state-dir``; ``down`` stops exactly the
processes recorded there; ``env`` prints the shell lines that point kubectl (ours) at it::

    streamml cluster up && eval "$(streamml cluster env)" && kubectl get namespaces
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from streamml.errors import InfrastructureError

if TYPE_CHECKING:
    from streamml.testbed.controlplane import ControlPlane


def _default_state_dir() -> Path:
    from streamml.testbed.k8sbuild import cache_root

    return cache_root() / "cluster"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build (or find cached) kube-apiserver, etcd, kubectl")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.add_argument(
        "--node",
        action="store_true",
        help="also kubelet, kube-proxy, kube-scheduler, CoreDNS, Traefik and the pause image",
    )
    for name, help_text in (
        ("up", "start the control plane in the background"),
        ("down", "stop it and delete its state"),
        ("env", "print `export` lines for KUBECONFIG and our kubectl"),
        ("status", "print the server address and whether each daemon runs"),
    ):
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument(
            "--state-dir",
            type=Path,
            default=None,
            help="where state, logs and kubeconfig live (default ~/.cache/streamml/cluster)",
        )
        if name == "up":
            sp.add_argument(
                "--no-controller-manager",
                action="store_true",
                help="API server and etcd only (no garbage collection, no ReplicaSets)",
            )
            sp.add_argument("--timeout", type=float, default=180.0, help="start-up timeout (s)")
            sp.add_argument(
                "--node",
                action="store_true",
                help="a real node too (kubelet, containerd, DNS, ingress) in its own network "
                "namespace; needs root (docs/node.md)",
            )


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.action == "build":
        return _build(args)
    state_dir: Path = (args.state_dir or _default_state_dir()).expanduser().resolve()
    if state_dir.exists() and not state_dir.is_dir():
        raise InfrastructureError(f"--state-dir {state_dir} is not a directory")
    existing = _attach(state_dir)
    if args.action == "up" and args.node:
        return _node_up(existing, state_dir, args.timeout)
    if args.action == "up":
        return _up(existing, state_dir, args)
    if args.action == "down":
        if existing is None:
            _say(f"no control plane in {state_dir}")
            return 0
        existing.stop()
        _say(f"control plane in {state_dir} stopped")
        return 0
    if existing is None:
        raise InfrastructureError(f"no control plane in {state_dir}: run `streamml cluster up`")
    if args.action == "env":
        return _env(existing, state_dir)
    print(f"server {existing.server}")  # status
    for daemon in existing.daemons:
        print(f"{daemon.name} pid {daemon.pid} {'running' if daemon.alive() else 'STOPPED'}")
    return 0 if existing.running() else 1


def _build(args: argparse.Namespace) -> int:
    from streamml.testbed.k8sbuild import ensure_binaries

    binaries = ensure_binaries(_say, force=args.force)
    print(binaries.bin_dir)
    if args.node:
        from streamml.testbed import nodebuild, nodeimages

        for target in nodebuild.ensure_all(_say, force=args.force):
            print(target.bin_dir)
        print(nodeimages.ensure_images())
    return 0


def _up(existing: ControlPlane | None, state_dir: Path, args: argparse.Namespace) -> int:
    from streamml.testbed.controlplane import ControlPlane
    from streamml.testbed.k8sbuild import ensure_binaries

    if existing is not None and existing.running():
        _say(f"control plane already up at {existing.server} (state in {state_dir})")
        return 0
    if existing is not None:  # stale: some daemon died; clear what is left
        _say(f"clearing a stale control plane in {state_dir}")
        existing.stop()
    binaries = ensure_binaries(_say)
    cp = ControlPlane(
        state_dir,
        with_controller_manager=not args.no_controller_manager,
        detached=True,
        binaries=binaries,
    )
    cp.start(timeout=args.timeout)
    _say(f"control plane v{binaries.version} up at {cp.server}; kubeconfig {cp.kubeconfig}")
    _say(f'use it with: eval "$(streamml cluster env --state-dir {shlex.quote(str(state_dir))})"')
    return 0


def _env(existing: ControlPlane, state_dir: Path) -> int:
    if not existing.running():
        raise InfrastructureError(
            f"the control plane in {state_dir} is not running: run `streamml cluster up`"
        )
    print(f"export KUBECONFIG={shlex.quote(str(existing.kubeconfig))}")
    print(f'export PATH={shlex.quote(str(existing.binaries.bin_dir))}:"$PATH"')
    _print_node_env(existing)
    return 0


def _attach(state_dir: Path) -> ControlPlane | None:
    import json

    from streamml.testbed.controlplane import STATE_FILE, ControlPlane

    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        is_node = bool(json.loads(path.read_text()).get("node"))
    except (OSError, ValueError) as exc:
        raise InfrastructureError(f"unreadable control-plane state {path}: {exc}") from exc
    if is_node:
        from streamml.testbed.node import NodeCluster

        return NodeCluster.attach(state_dir)
    return ControlPlane.attach(state_dir)


def _node_up(existing: ControlPlane | None, state_dir: Path, timeout: float) -> int:
    from streamml.testbed.node import NodeCluster

    if existing is not None and existing.running() and isinstance(existing, NodeCluster):
        _say(f"node already up: API {existing.server}, ingress {existing.ingress_url}")
        return 0
    if existing is not None:
        _say(f"clearing a stale cluster in {state_dir}")
        existing.stop()
    node = NodeCluster(state_dir, detached=True)
    node.start(timeout=max(timeout, 300.0))
    _say(f"node up: API {node.server} (relay), ingress {node.ingress_url}; state in {state_dir}")
    _say(f'use it with: eval "$(streamml cluster env --state-dir {shlex.quote(str(state_dir))})"')
    return 0


def _print_node_env(cluster: ControlPlane) -> None:
    from streamml.testbed.node import NodeCluster

    if not isinstance(cluster, NodeCluster):
        return
    from streamml.testbed.nodehost import NETNS

    print(f"export STREAMML_INGRESS_URL={shlex.quote(cluster.ingress_url)}")
    print(
        f"# kubectl and the ingress URL go through 127.0.0.1 relays into network namespace {NETNS};"
    )
    print(f"# or run a client inside it: nsenter --net=/run/netns/{NETNS} -- COMMAND")
