"""The control plane's pure parts: certificates, kubeconfigs, build cache paths, PID identity."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streamml import procs
from streamml.errors import InfrastructureError
from streamml.testbed import k8sbuild, k8sflags, kubeconfig, pki


def test_client_cert_carries_user_and_groups_and_is_signed_by_the_ca() -> None:
    ca = pki.new_ca()
    pair = pki.client_cert(ca, "alice", ("system:masters", "devs"))
    cert = x509.load_pem_x509_certificate(pair.cert)
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters", "devs"]
    assert cert.issuer == ca_cert.subject
    cert.verify_directly_issued_by(ca_cert)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(ValueError, match="user name"):
        pki.client_cert(ca, "")


def test_serving_cert_names_loopback_only() -> None:
    ca = pki.new_ca()
    cert = x509.load_pem_x509_certificate(pki.serving_cert(ca).cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    other_ca = x509.load_pem_x509_certificate(pki.new_ca().cert)
    with pytest.raises(InvalidSignature):  # a different CA (same name) did not sign it
        cert.verify_directly_issued_by(other_ca)


def test_kubeconfig_embeds_credentials_and_refuses_ambiguity(tmp_path: Path) -> None:
    doc = kubeconfig.kubeconfig("https://127.0.0.1:1", b"CA", "bob", token="t0k", namespace="ns")
    assert doc["users"] == [{"name": "bob", "user": {"token": "t0k"}}]
    assert doc["contexts"][0]["context"]["namespace"] == "ns"
    path = kubeconfig.write(tmp_path / "deep" / "kubeconfig", doc)
    assert yaml.safe_load(path.read_text()) == doc
    assert path.stat().st_mode & 0o777 == 0o600  # it holds a credential
    with pytest.raises(ValueError, match="either"):
        kubeconfig.kubeconfig("https://x", b"CA", "bob")
    with pytest.raises(ValueError, match="either"):
        kubeconfig.kubeconfig(
            "https://x", b"CA", "bob", token="t", client_cert=b"c", client_key=b"k"
        )
    with pytest.raises(ValueError, match="its key"):
        kubeconfig.kubeconfig("https://x", b"CA", "bob", client_cert=b"c")


def test_build_cache_location_and_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMML_CACHE_DIR", str(tmp_path))
    version = k8sbuild.kubernetes_version()
    assert version.count(".") == 2 and version.split(".")[0] == "1"
    binaries = k8sbuild.cached_binaries()
    assert binaries.bin_dir == tmp_path / f"k8s-{version}" / "bin"
    assert not binaries.complete()
    go_mod = tmp_path / "go.mod"
    go_mod.write_text("module x\n\nrequire k8s.io/api v0.1.0\n")
    with pytest.raises(InfrastructureError, match="does not require"):
        k8sbuild._module_version("k8s.io/kubernetes", go_mod)


def test_every_staging_module_is_replaced_at_the_matching_version() -> None:
    # go.mod must pin each k8s.io staging module to v0.<minor>.<patch> of the pinned release.
    go_mod = (k8sbuild.GO_MODULE_DIR / "go.mod").read_text()
    version = k8sbuild.kubernetes_version()
    staging = f"v0.{version.split('.', 1)[1]}"
    replaces = [line.split() for line in go_mod.splitlines() if "=>" in line]
    assert len(replaces) >= 25
    for left, _, right, pinned in replaces:
        assert left == right and left.startswith("k8s.io/")
        assert pinned == staging, left


def test_build_lock_lets_one_builder_at_a_time(tmp_path: Path) -> None:
    lock = tmp_path / "k8s.lock"
    order: list[str] = []
    waiting: list[str] = []
    with k8sbuild._locked(lock, order.append):

        def second() -> None:
            with k8sbuild._locked(lock, waiting.append):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 10
        while not waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        order.append("first done")
    thread.join(10)
    assert waiting and "waiting for another build" in waiting[0]
    assert order == ["first done", "second"]


def test_daemon_identity_survives_pid_reuse(tmp_path: Path) -> None:
    daemon, popen = procs.spawn("sleeper", ["sleep", "60"], tmp_path / "s.log", detached=False)
    try:
        assert daemon.alive()
        # Same PID, different start time: a recycled PID is not our process and is never signalled.
        impostor = procs.Daemon("sleeper", daemon.pid, daemon.start_ticks + 1, daemon.argv, "")
        assert not impostor.alive()
        procs.stop(impostor)
        assert daemon.alive()
    finally:
        procs.stop(daemon, popen)
    assert not daemon.alive()
    assert popen.returncode is not None


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    script = "trap '' TERM; while :; do sleep 0.1; done"
    daemon, popen = procs.spawn(
        "stubborn", ["bash", "-c", script], tmp_path / "b.log", detached=True
    )
    try:
        time.sleep(0.3)  # let bash install the trap
        procs.stop(daemon, popen, grace=0.5)
        assert not daemon.alive()
        assert popen.returncode == -9
    finally:
        if daemon.alive():
            os.kill(daemon.pid, 9)
            popen.wait()


def test_read_proc_of_a_missing_pid_is_none() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert procs.read_proc(proc.pid) is None


def test_daemons_listen_on_loopback_only_with_rbac_and_no_anonymous_access() -> None:
    pki_dir, bin_ = Path("/p"), Path("/b")
    argvs = [
        k8sflags.etcd_argv(bin_ / "etcd", Path("/d"), 2379, 2380),
        k8sflags.apiserver_argv(bin_ / "kube-apiserver", pki_dir, "http://127.0.0.1:2379", 6443),
        k8sflags.controller_manager_argv(bin_ / "kcm", pki_dir, Path("/k")),
    ]
    for argv in argvs:
        for flag in argv:
            name, _, value = flag.partition("=")
            if "url" in name or "address" in name or name == "--etcd-servers":
                assert value.startswith(("127.0.0.1", "http://127.0.0.1:")), flag
    apiserver = argvs[1]
    assert "--authorization-mode=RBAC" in apiserver
    assert "--anonymous-auth=false" in apiserver
    assert f"--service-cluster-ip-range={k8sflags.SERVICE_CLUSTER_IP_RANGE}" in apiserver
    assert "--secure-port=0" in argvs[2] and "--leader-elect=false" in argvs[2]


def test_test_daemons_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    # A parent killed outright (SIGKILL: no cleanup runs) must not leave its daemon behind.
    code = (
        "import sys, time; from pathlib import Path; from streamml import procs\n"
        "d, _ = procs.spawn('sleeper', ['sleep', '120'], Path(sys.argv[1]), detached=False)\n"
        "print(d.pid, d.start_ticks, flush=True); time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-P", "-c", code, str(tmp_path / "s.log")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    pid, ticks = (int(v) for v in parent.stdout.readline().split())
    daemon = procs.Daemon("sleeper", pid, ticks, ("sleep",), "")
    assert daemon.alive()
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while daemon.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not daemon.alive()


def test_install_dir_puts_a_build_in_place_and_replaces_a_stale_one(tmp_path: Path) -> None:
    from streamml.testbed.k8sbuild import install_dir

    root = tmp_path / "k8s-1.0"
    first = tmp_path / "k8s-1.0.tmp-1"
    first.mkdir()
    (first / "bin").write_text("first")
    install_dir(first, root)
    assert (root / "bin").read_text() == "first" and not first.exists()
    second = tmp_path / "k8s-1.0.tmp-2"
    second.mkdir()
    (second / "bin").write_text("second")
    install_dir(second, root)
    assert (root / "bin").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k8s-1.0"]  # the stale one is gone
