"""What every custom resource of the project declares about itself (for CRD generation)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

GROUP = "streamml.io"
VERSION = "v1alpha1"


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry (``kubectl get`` column)."""

    name: str
    json_path: str
    type: str = "string"  # string | integer | number | boolean | date
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ResourceInfo:
    """Names, schema models and presentation of one custom resource kind."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    printer_columns: tuple[PrinterColumn, ...] = ()
    categories: tuple[str, ...] = ("streamml",)
    scale_spec_path: str | None = None  # e.g. ".spec.server.replicas"
    scale_status_path: str | None = None
    scale_selector_path: str | None = None
    group: str = GROUP
    version: str = VERSION
    cel_rules: tuple[tuple[str, str], ...] = field(default=())  # (rule, message) on spec

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"
