"""The ``StreamModel`` custom resource: one model server and the declarative models it serves.

The pydantic models here are the single source of truth: the operator validates every object
with them, and ``streamml crds`` generates the CRD's OpenAPI schema from them. Field names are
camelCase on the wire (Kubernetes convention) and snake_case in Python.

Example::

    apiVersion: streamml.io/v1alpha1
    kind: StreamModel
    metadata: {name: lammps-time}
    spec:
      models:
        - name: linear
          flavor: regression
          pipeline:
            - {class: preprocessing.StandardScaler}
            - {class: linear_model.LinearRegression, params: {intercept_lr: 0.1}}
      server: {replicas: 1, storage: {type: PersistentVolumeClaim, size: 1Gi}}
      ingress: {enabled: true, host: models.example.org}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from streamml.vocabulary import RELEASE
from streamml.vocabulary.conditions import Condition
from streamml.vocabulary.modelspec import ModelSpec
from streamml.vocabulary.resource import PrinterColumn, ResourceInfo

MAX_MODELS = 32
#: The server keeps its models in one process (learning is sequential and exact); a second
#: replica would learn a different half of the stream. Scale is therefore 0 (paused) or 1.
MAX_REPLICAS = 1
#: the image `streamml images build` (or `docker build -f Dockerfile.server .`) tags locally
DEFAULT_SERVER_IMAGE = f"lammps-stream-ml/server:{RELEASE}"
#: the default until 0.1.0: a registry path that never existed; treated as "the default"
LEGACY_DEFAULT_SERVER_IMAGE = "ghcr.io/streamml/lammps-stream-ml-server:0.1.0"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=20)]
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


class _Wire(BaseModel):
    """camelCase on the wire, unknown fields rejected, frozen (specs are values)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Resources(_Wire):
    """Compute resources of the server container (Kubernetes quantities)."""

    requests: dict[str, Quantity] = Field(
        default_factory=lambda: {"cpu": "100m", "memory": "256Mi"},
        description="e.g. {cpu: 100m, memory: 256Mi}",
        max_length=8,
    )
    limits: dict[str, Quantity] = Field(
        default_factory=lambda: {"memory": "1Gi"}, description="e.g. {memory: 1Gi}", max_length=8
    )


class StorageSpec(_Wire):
    """Where the server keeps its models: a PersistentVolumeClaim, or ephemeral (emptyDir)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.type == 'PersistentVolumeClaim' || !has(self.storageClassName)",
                    "message": "storageClassName only applies to type PersistentVolumeClaim",
                }
            ]
        }
    )

    type: Literal["PersistentVolumeClaim", "Ephemeral"] = Field(
        default="PersistentVolumeClaim", description="PersistentVolumeClaim keeps models"
    )
    size: str = Field(default="1Gi", pattern=QUANTITY_PATTERN, max_length=20)
    storage_class_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN)
    reclaim_policy: Literal["Delete", "Retain"] = Field(
        default="Delete",
        description=(
            "what deleting the StreamModel does to its PersistentVolumeClaim: Delete (owned, "
            "garbage-collected with the models) or Retain (not owned: kept, and adopted by the "
            "next StreamModel of the same name in the namespace)"
        ),
    )


class Auth(_Wire):
    """Credentials of the server. Without ``secretName`` the operator generates a token."""

    secret_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="existing Secret with keys 'username' and 'token' (else one is generated)",
    )
    username: str = Field(
        default="streamml", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="generated user"
    )


class Server(_Wire):
    """The model server Deployment."""

    image: str = Field(default=DEFAULT_SERVER_IMAGE, min_length=1, max_length=512)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS, description="0 pauses the server")
    port: int = Field(default=8080, ge=1024, le=65535, description="container port (non-root)")
    resources: Resources = Field(default_factory=Resources)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    auth: Auth = Field(default_factory=Auth)


class Service(_Wire):
    """The Service in front of the server."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(default=80, ge=1, le=65535)


class Ingress(_Wire):
    """Optional Ingress exposing the server outside the cluster."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.tlsSecretName) || has(self.host)",
                    "message": "ingress.tlsSecretName needs ingress.host",
                }
            ]
        }
    )

    enabled: bool = False
    host: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    path: str = Field(default="/", pattern=r"^/[A-Za-z0-9/_.~-]*$", max_length=256)
    class_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    tls_secret_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)


class StreamModelSpec(_Wire):
    """What the user declares: the models and how to serve them."""

    models: list[ModelSpec] = Field(
        default_factory=list,
        max_length=MAX_MODELS,
        description="declarative models created on the server, as POST /api/model/ accepts",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    server: Server = Field(default_factory=Server)
    service: Service = Field(default_factory=Service)
    ingress: Ingress = Field(default_factory=Ingress)


class ModelDrift(_Wire):
    """A served model's drift detections as last polled (its error stream got worse)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    detections: int = Field(ge=0, description="detections since the model was created")
    sample: int = Field(ge=0, description="the scored sample that completed the last one")
    change_at_sample: int = Field(
        ge=0, description="the estimated first scored sample of the new regime"
    )
    time: str = Field(max_length=32, description="when the server saw it (RFC 3339)")
    magnitude: float = Field(description="mean error since the change, in warm-up error units")


class ModelStatus(_Wire):
    """One served model as last polled."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(max_length=63)
    ready: bool = False
    samples: int = Field(default=0, ge=0, description="samples learned")
    metrics: dict[str, float] = Field(default_factory=dict, max_length=12)
    spec_hash: str | None = Field(
        default=None, max_length=32, description="digest of the model spec the server holds"
    )
    drift: ModelDrift | None = Field(default=None, description="absent: no drift detected")


class BestModel(_Wire):
    """The model with the best headline metric (lowest RMSE, highest accuracy...)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model: str
    metric: str
    value: float


class StreamModelStatus(_Wire):
    """What the operator observes. Written only by the operator, through the status subresource."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    observed_generation: int | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    url: str | None = Field(default=None, description="external URL (ingress)")
    address: str | None = Field(
        default=None,
        description=(
            "the base URL jobs post to, with or without an Ingress: the in-cluster Service "
            "http://NAME.NAMESPACE.svc:PORT (a local server's loopback URL in the local runtime)"
        ),
    )
    dashboard_url: str | None = Field(
        default=None,
        description=(
            "the model server's live dashboard in a browser: the Ingress URL + /dashboard/ when "
            "an Ingress is enabled, else the address + /dashboard/ (from outside the cluster: "
            "`streamml dashboard --streammodel NAME`)"
        ),
    )
    auth_secret_name: str | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    selector: str | None = Field(default=None, description="label selector (scale subresource)")
    models_ready: str | None = Field(default=None, description="ready/declared, e.g. 3/3")
    models: list[ModelStatus] = Field(
        default_factory=list,
        max_length=MAX_MODELS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    samples_learned: int | None = None
    best: BestModel | None = None


#: where the model server serves its dashboard page
DASHBOARD_PATH = "/dashboard/"


def dashboard_url(base: str | None) -> str | None:
    """The dashboard of the server at ``base`` (an Ingress URL or an address), or None."""
    return base.rstrip("/") + DASHBOARD_PATH if base else None


def _ready_column() -> PrinterColumn:
    return PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status')


STREAMMODEL = ResourceInfo(
    kind="StreamModel",
    plural="streammodels",
    singular="streammodel",
    short_names=("sm", "smodel"),
    spec_model=StreamModelSpec,
    status_model=StreamModelStatus,
    printer_columns=(
        _ready_column(),
        PrinterColumn("URL", ".status.url"),
        PrinterColumn("Models", ".status.modelsReady", description="ready/declared"),
        PrinterColumn("Samples", ".status.samplesLearned", type="integer"),
        PrinterColumn("Best", ".status.best.model"),
        PrinterColumn("Metric", ".status.best.metric"),
        PrinterColumn("Score", ".status.best.value", type="number"),
        PrinterColumn("Dashboard", ".status.dashboardUrl"),
        PrinterColumn("Address", ".status.address", priority=1),
        PrinterColumn("Reason", '.status.conditions[?(@.type=="Ready")].reason', priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", type="date"),
    ),
    scale_spec_path=".spec.server.replicas",
    scale_status_path=".status.replicas",
    scale_selector_path=".status.selector",
)


def parse_spec(spec: dict[str, Any]) -> StreamModelSpec:
    """Validate a CR's spec (raises pydantic.ValidationError)."""
    return StreamModelSpec.model_validate(spec)
