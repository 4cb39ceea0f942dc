"""The real node's pure builders: listeners, no route out, DNS without forwarding, images, pins."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import re
import tarfile
from pathlib import Path

import pytest
import yaml

from streamml.errors import InfrastructureError
from streamml.testbed import k8sbuild, nodebuild, nodeflags, nodehost, nodeimages, noderelay

NODE = ipaddress.ip_address(nodeflags.NODE_IP)


def _inside_only(address: str) -> bool:
    """127.0.0.1 (the host's or the namespace's own) or the node address inside the namespace."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    return host in ("127.0.0.1", nodeflags.NODE_IP)


def test_every_daemon_listens_on_loopback_or_the_node_address(tmp_path: Path) -> None:
    p = tmp_path
    flags = nodeflags.apiserver_node_flags(p, "http://127.0.0.1:2379")
    flags += nodeflags.controller_manager_node_argv(p / "kcm", p, p / "kc")
    flags += nodeflags.scheduler_argv(p / "sched", p / "kc")
    flags += nodeflags.traefik_argv(p / "traefik")
    for flag in flags:
        name, _, value = flag.partition("=")
        if name.endswith(("bind-address", "advertise-address")) or name.endswith(".address"):
            assert _inside_only(value), flag
    kubelet = yaml.safe_load(nodeflags.kubelet_config(p, p / "resolv.conf", p / "logs"))
    assert kubelet["address"] == nodeflags.NODE_IP
    assert kubelet["healthzBindAddress"] == "127.0.0.1"
    assert kubelet["readOnlyPort"] == 0
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    proxy = yaml.safe_load(nodeflags.kube_proxy_config(p / "kc"))
    for key in ("bindAddress", "healthzBindAddress", "metricsBindAddress"):
        assert _inside_only(proxy[key]), key
    assert proxy["nodePortAddresses"] == [f"{nodeflags.NODE_IP}/32"]
    assert proxy["iptables"]["localhostNodePorts"] is False
    # 0 everywhere: kube-proxy leaves the conntrack sysctls (some host-wide) as they are
    assert proxy["conntrack"] == {
        "maxPerCore": 0,
        "min": 0,
        "tcpEstablishedTimeout": "0s",
        "tcpCloseWaitTimeout": "0s",
    }


def test_a_real_node_gets_node_authorization_and_a_verified_kubelet(tmp_path: Path) -> None:
    flags = dict(f.split("=", 1) for f in nodeflags.apiserver_node_flags(tmp_path, "http://x"))
    assert flags["--authorization-mode"] == "Node,RBAC"
    assert "NodeRestriction" in flags["--enable-admission-plugins"]
    assert flags["--kubelet-preferred-address-types"] == "InternalIP"
    assert flags["--advertise-address"] == nodeflags.NODE_IP
    assert flags["--kubelet-certificate-authority"].endswith("ca.crt")
    kcm = nodeflags.controller_manager_node_argv(tmp_path, tmp_path, tmp_path)
    assert "--controllers=*" in kcm  # endpointslice, root-ca-cert-publisher, ... as on any cluster
    assert "--use-service-account-credentials=true" in kcm
    assert "--leader-elect=false" in kcm


def test_pods_are_never_masqueraded_out() -> None:
    conf = json.loads(nodeflags.cni_conflist(Path("/x")))
    bridge = conf["plugins"][0]
    assert bridge["ipMasq"] is False
    assert conf["plugins"][1]["snat"] is False
    assert ipaddress.ip_network(nodeflags.POD_CIDR).is_private


def test_cluster_dns_serves_the_cluster_zones_and_forwards_nothing(tmp_path: Path) -> None:
    corefile = nodeflags.corefile(tmp_path / "kc", "user")
    assert "forward" not in corefile and "proxy" not in corefile
    assert f"bind {nodeflags.NODE_IP}" in corefile
    assert corefile.splitlines()[0].startswith(nodeflags.CLUSTER_DOMAIN)
    main_go = (nodebuild.COREDNS_DIR / "main.go").read_text()
    plugins = set(re.findall(r'"github.com/coredns/coredns/plugin/(\w+)"', main_go))
    assert plugins == {"bind", "cache", "errors", "health", "kubernetes", "loadbalance", "ready"}
    kubelet = yaml.safe_load(nodeflags.kubelet_config(tmp_path, tmp_path / "r", tmp_path / "l"))
    assert kubelet["clusterDNS"] == [nodeflags.NODE_IP]


def test_containerd_uses_the_local_pause_image_and_this_vms_workarounds(tmp_path: Path) -> None:
    toml = nodeflags.containerd_config(
        tmp_path / "r", tmp_path / "s", tmp_path / "c.sock", tmp_path
    )
    assert f'sandbox_image = "{nodeimages.PAUSE_IMAGE}"' in toml
    for setting in (
        "restrict_oom_score_adj = true",
        "disable_apparmor = true",
        "netns_mounts_under_state_dir = true",
        "SystemdCgroup = false",
    ):
        assert setting in toml


def test_docker_archive_layout_imports_as_two_images() -> None:
    raw = nodeimages.docker_archive({"pause": b"P", "tinyhttp": b"T"})
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(files["manifest.json"])
    assert [m["RepoTags"] for m in manifest] == [[i.tag] for i in nodeimages.IMAGES]
    for entry in manifest:
        config = json.loads(files[entry["Config"]])
        (layer_name,) = entry["Layers"]
        diff_id = "sha256:" + hashlib.sha256(files[layer_name]).hexdigest()
        assert config["rootfs"]["diff_ids"] == [diff_id]
        assert entry["Config"] == hashlib.sha256(files[entry["Config"]]).hexdigest() + ".json"
    assert raw == nodeimages.docker_archive({"pause": b"P", "tinyhttp": b"T"})  # reproducible


def test_node_module_keeps_every_control_plane_pin() -> None:
    # node.mod = go.mod + the node commands' dependencies: no version of go.mod may move (the
    # control plane and the node share the Go build cache, and go.mod's cache key stays put).
    def requires(text: str) -> dict[str, str]:
        pairs = re.findall(r"^\s+([\w./-]+) (v\S+)", text, re.M)
        return dict(pairs)

    go_mod = (k8sbuild.GO_MODULE_DIR / "go.mod").read_text()
    node_mod = (k8sbuild.GO_MODULE_DIR / "node.mod").read_text()
    node = requires(node_mod)
    for module, version in requires(go_mod).items():
        if version == "v0.0.0":  # staging modules: replaced either way
            continue
        assert node[module] == version, module

    def replaces(text: str) -> list[str]:
        return sorted(line for line in text.splitlines() if "=>" in line)

    assert replaces(go_mod) == replaces(node_mod)
    coredns = (nodebuild.COREDNS_DIR / "go.mod").read_text()
    staging = f"v0.{k8sbuild.kubernetes_version().split('.', 1)[1]}"
    for module in ("k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go"):
        assert requires(coredns)[module] == staging, module


def test_a_source_patch_applies_exactly_once_or_fails_naming_the_file(tmp_path: Path) -> None:
    source = tmp_path / "pkg" / "a.go"
    source.parent.mkdir()
    source.write_text('import (\n\t"x/dns"\n)\nf(dns.New())\ng()\ng()\n')
    once = nodebuild.SourcePatch("pkg/a.go", '\t"x/dns"\n', "")
    nodebuild.apply_patches(tmp_path, (once, nodebuild.SourcePatch("pkg/a.go", "dns.New()", "nil")))
    assert source.read_text() == "import (\n)\nf(nil)\ng()\ng()\n"
    for old, times in (('\t"x/dns"\n', 0), ("g()", 2)):
        with pytest.raises(InfrastructureError, match=f"matches {times} times.*a.go"):
            nodebuild.apply_patches(tmp_path, (nodebuild.SourcePatch("pkg/a.go", old, ""),))
    assert source.read_text() == "import (\n)\nf(nil)\ng()\ng()\n"


def test_traefik_is_built_without_lego_dns_providers_and_the_patch_is_in_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    removed = [p for p in nodebuild.TRAEFIK_PATCHES if "providers/dns" in p.old]
    assert removed and all(p.path == "pkg/provider/acme/provider.go" for p in removed)
    patched = nodebuild.traefik_target().recipe()
    monkeypatch.setattr(nodebuild, "TRAEFIK_PATCHES", nodebuild.TRAEFIK_PATCHES[:1])
    assert nodebuild.traefik_target().recipe() != patched  # an old build is not reused


def test_build_targets_are_cached_per_version_with_their_own_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMML_CACHE_DIR", str(tmp_path))
    targets = nodebuild.targets()
    assert [t.root.name for t in targets] == [
        f"k8s-node-{k8sbuild.kubernetes_version()}",
        f"coredns-{nodebuild.coredns_target().version}",
        f"traefik-{nodebuild.TRAEFIK_VERSION}",
    ]
    assert len({t.recipe() for t in targets}) == 3
    assert not any(t.complete() for t in targets)
    target = targets[1]
    target.bin_dir.mkdir(parents=True)
    (target.bin_dir / "coredns").write_bytes(b"")
    (target.bin_dir / "coredns").chmod(0o755)
    (target.root / "build-info.json").write_text(json.dumps({"recipe": target.recipe()}))
    assert target.complete()
    (target.root / "build-info.json").write_text(json.dumps({"recipe": "other"}))
    assert not target.complete()


def test_relay_listens_on_host_loopback_and_crosses_by_unix_socket(tmp_path: Path) -> None:
    inside, host = noderelay.relay_argvs(tmp_path / "api.sock", "10.250.0.1:6443", 4321)
    assert inside[1].startswith(f"UNIX-LISTEN:{tmp_path / 'api.sock'}")
    assert inside[2] == "TCP:10.250.0.1:6443"
    assert host[1].startswith("TCP-LISTEN:4321,bind=127.0.0.1,")
    assert host[2] == f"UNIX-CONNECT:{tmp_path / 'api.sock'}"


def test_created_paths_are_removed_only_if_they_were_not_there(tmp_path: Path) -> None:
    mine, theirs = tmp_path / "mine" / "sub", tmp_path / "theirs"
    theirs.mkdir()
    paths = (str(mine), str(mine.parent), str(theirs))
    before = nodehost.existing_paths(paths)
    mine.mkdir(parents=True)
    nodehost.remove_created_paths(before, paths)
    assert not mine.parent.exists()
    assert theirs.exists()


def test_nsenter_enters_only_the_network_namespace() -> None:
    argv = nodehost.nsenter()
    assert argv == ["nsenter", f"--net=/run/netns/{nodehost.NETNS}", "--"]


def test_local_volume_is_prebound_to_its_claim_under_the_volume_root(tmp_path: Path) -> None:
    from streamml.testbed import localpv

    claim = {
        "metadata": {"name": "data", "namespace": "ns", "uid": "u-1"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
    }
    pv = localpv.volume_for(claim, tmp_path)
    assert pv["metadata"]["name"] == "pvc-u-1"
    assert pv["spec"]["claimRef"] == {
        "kind": "PersistentVolumeClaim",
        "namespace": "ns",
        "name": "data",
        "uid": "u-1",
    }
    assert pv["spec"]["hostPath"]["path"] == str(tmp_path / "pvc-u-1")
    assert pv["spec"]["capacity"] == {"storage": "2Gi"}
    assert pv["spec"]["storageClassName"] == nodeflags.STORAGE_CLASS
    assert pv["metadata"]["annotations"][localpv.ANNOTATION] == nodeflags.PROVISIONER


def test_each_binary_is_named_after_its_package() -> None:
    # `go build -o DIR/ PKG...` names each binary after the package's last path element (the
    # module's for "."): the cache's completeness check looks for exactly those names.
    for target in nodebuild.targets():
        for name, package in target.packages.items():
            last = package.rstrip("/").rsplit("/", 1)[-1]
            assert name == (last if last != "." else target.name), package
