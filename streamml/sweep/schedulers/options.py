"""What each scheduler backend is built from: one typed options model per kind.

The engine's drivers derive them from the typed ``spec.scheduler``
(:func:`streamml.sweep.schedulers.options_from_spec`); a sweep file, a test or a benchmark may give
them as a camelCase mapping (:func:`streamml.sweep.schedulers.make_scheduler`), which pydantic
validates strictly (``"2"`` is not a count). A field's ``description`` completes the error
message naming it ("scheduler setting 'env' must map strings to strings").
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

POSITIVE = "must be a positive integer"
STRING = "must be a string"
STRING_MAP = "must map strings to strings"
STRING_LIST = "must be a list of strings"


class _Options(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, strict=True, extra="ignore", frozen=True
    )


class LocalOptions(_Options):
    kind: Literal["local"] = "local"
    root: str | None = Field(default=None, description=STRING)  # default: a new temp dir
    max_parallel: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description=POSITIVE
    )


class SlurmCliOptions(_Options):
    kind: Literal["slurm", "slurm-cli"] = "slurm"
    partition: str | None = Field(default=None, description=STRING)
    env: dict[str, str] = Field(default_factory=dict, description=STRING_MAP)  # e.g. SLURM_CONF
    sbatch_args: list[str] = Field(default_factory=list, description=STRING_LIST)


class SlurmRestOptions(_Options):
    kind: Literal["slurm-rest"] = "slurm-rest"
    url: str = Field(description=STRING)
    user: str = Field(default="root", description=STRING)
    #: the JWT itself, or a file holding it (read when the scheduler is built)
    token: str | None = Field(default=None, description=STRING)
    token_file: str | None = Field(default=None, description=STRING)
    partition: str | None = Field(default=None, description=STRING)

    @model_validator(mode="after")
    def _a_token(self) -> SlurmRestOptions:
        if self.token is None and self.token_file is None:
            raise ValueError("the slurm-rest scheduler needs 'token' or 'tokenFile'")
        return self


class FluxOptions(_Options):
    kind: Literal["flux"] = "flux"
    #: the instance's FLUX_URI (local://… or ssh://…); default $FLUX_URI when built
    uri: str | None = Field(default=None, description=STRING)
    #: the flux command; default $STREAMML_FLUX, PATH, the project's build
    flux: str | None = Field(default=None, description=STRING)
    env: dict[str, str] = Field(default_factory=dict, description=STRING_MAP)


class KubernetesOptions(_Options):
    kind: Literal["kubernetes"] = "kubernetes"
    namespace: str = Field(default="default", description=STRING)
    image: str | None = Field(default=None, description=STRING)
    kubeconfig: str | None = Field(default=None, description=STRING)  # else in-cluster config
    service_account: str | None = Field(default=None, description=STRING)
    ttl_seconds_after_finished: int = Field(default=3600, ge=1, description=POSITIVE)


SchedulerOptions = Annotated[
    LocalOptions | SlurmCliOptions | SlurmRestOptions | FluxOptions | KubernetesOptions,
    Field(discriminator="kind"),
]
