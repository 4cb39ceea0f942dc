"""Pure manifest builders: specs in, Kubernetes objects out (no cluster needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from streamml.operator import builders
from streamml.operator.builders import Owner
from streamml.vocabulary.streammodel import StreamModelSpec

SAMPLES = Path(__file__).parents[2] / "config" / "samples" / "streammodel.yaml"
OWNER = Owner(name="lammps-time", namespace="science", uid="1234-uid")


def sample_spec() -> StreamModelSpec:
    return StreamModelSpec.model_validate(yaml.safe_load(SAMPLES.read_text())["spec"])


def spec(**changes: Any) -> StreamModelSpec:
    return StreamModelSpec.model_validate(changes)


def _owned(obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    assert meta["namespace"] == "science"
    [ref] = meta["ownerReferences"]
    assert ref == {
        "apiVersion": "streamml.io/v1alpha1",
        "kind": "StreamModel",
        "name": "lammps-time",
        "uid": "1234-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert meta["labels"]["app.kubernetes.io/instance"] == "lammps-time"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "streamml-operator"


def test_sample_has_the_prototype_regressions_and_feature_engineering() -> None:
    models = {m.name: [c.class_name for c in m.pipeline] for m in sample_spec().models}
    assert ["preprocessing.StandardScaler", "linear_model.LinearRegression"] in models.values()
    assert ["linear_model.BayesianLinearRegression"] in models.values()
    assert ["linear_model.PARegressor"] in models.values()
    assert [
        "feature_extraction.PolynomialExtender",
        "preprocessing.StandardScaler",
        "linear_model.LinearRegression",
    ] in models.values()
    assert [
        "feature_extraction.PolynomialExtender",
        "linear_model.BayesianLinearRegression",
    ] in models.values()
    pa = next(m for m in sample_spec().models if m.name == "passive-aggressive")
    assert pa.pipeline[0].params == {"C": 0.01, "mode": 2, "eps": 0.1, "learn_intercept": False}


def test_deployment_is_hardened_and_probed() -> None:
    dep = builders.deployment(OWNER, sample_spec(), "img:1")
    _owned(dep)
    pod = dep["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["image"] == "img:1"
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert dep["spec"]["replicas"] == 1
    # credentials come from the Secret, never from the manifest itself
    args = container["args"]
    assert args[args.index("--auth-token-file") + 1].startswith(builders.AUTH_DIR)
    [env] = container["env"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "lammps-time-auth", "key": "username"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["auth"]["secret"]["secretName"] == "lammps-time-auth"
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "lammps-time-data"
    # the selector matches the pod labels, and the Service selects the same pods
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert builders.service(OWNER, sample_spec())["spec"]["selector"] == selector


def test_referenced_secret_and_ephemeral_storage() -> None:
    s = spec(server={"auth": {"secretName": "my-creds"}, "storage": {"type": "Ephemeral"}})
    dep = builders.deployment(OWNER, s, "img")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["auth"]["secret"]["secretName"] == "my-creds"
    assert "emptyDir" in volumes["data"]
    assert builders.pvc(OWNER, s) is None


def test_pod_template_hash_rolls_only_for_server_changes() -> None:
    base = sample_spec()
    same = builders.config_hash(OWNER, base, "img")
    assert builders.config_hash(OWNER, base, "img") == same
    fewer_models = base.model_copy(update={"models": base.models[:1]})
    assert builders.config_hash(OWNER, fewer_models, "img") == same  # models: via the API
    assert builders.config_hash(OWNER, base, "img:2") != same
    bigger = spec(server={"resources": {"limits": {"memory": "2Gi"}}})
    assert builders.config_hash(OWNER, bigger, "img") != builders.config_hash(OWNER, spec(), "img")


def test_secret_pvc_service() -> None:
    s = sample_spec()
    secret = builders.secret(OWNER, s, "tok")
    _owned(secret)
    assert secret["stringData"] == {"username": "streamml", "token": "tok"}
    claim = builders.pvc(OWNER, s)
    assert claim is not None
    _owned(claim)
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    svc = builders.service(OWNER, s)
    _owned(svc)
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert builders.new_token() != builders.new_token()
    assert len(builders.new_token()) >= 40


def test_ingress_and_url() -> None:
    s = sample_spec()
    ing = builders.ingress(OWNER, s)
    assert ing is not None
    _owned(ing)
    [rule] = ing["spec"]["rules"]
    assert rule["host"] == "lammps-time.models.example.org"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "lammps-time", "port": {"number": 80}}
    assert builders.ingress_url(s, None) == "http://lammps-time.models.example.org/"
    tls = spec(ingress={"enabled": True, "host": "a.example.org", "tlsSecretName": "cert"})
    ing = builders.ingress(OWNER, tls)
    assert ing is not None
    assert ing["spec"]["tls"] == [{"hosts": ["a.example.org"], "secretName": "cert"}]
    assert builders.ingress_url(tls, None) == "https://a.example.org/"
    assert builders.ingress(OWNER, spec()) is None
    no_host = spec(ingress={"enabled": True})
    assert builders.ingress_url(no_host, None) is None
    assert builders.ingress_url(no_host, "10.1.2.3") == "http://10.1.2.3/"


def test_in_cluster_address_is_a_dns_name() -> None:
    assert builders.service_address(OWNER, spec()) == "http://lammps-time.science.svc:80"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"server": {"replicas": 2}}, "replicas"),
        ({"server": {"port": 80}}, "port"),
        ({"server": {"resources": {"limits": {"memory": "lots"}}}}, "memory"),
        ({"server": {"image": ""}}, "image"),
        ({"ingress": {"host": "Not A Host"}}, "host"),
        ({"models": [{"name": "Bad_Name", "pipeline": [{"class": "stats.Mean"}]}]}, "name"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_invalid_specs_are_refused(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        StreamModelSpec.model_validate(bad)
