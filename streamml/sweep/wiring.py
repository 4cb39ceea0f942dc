"""What both drivers of a sweep (operator and CLI) hand to the engine: the same wiring twice.

Given a validated spec, where the model server is, its credentials and a work directory, build
the scheduler, the job context (credentials as files, never on a command line), the metrics
source for the learning curve and the re-delivery of spooled results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streamml.errors import DeliveryError, SpecError
from streamml.files import write_atomic
from streamml.sweep import jobs, schedulers, timelimits
from streamml.sweep import snapshot as inputs
from streamml.sweep.access import ServerAccess
from streamml.sweep.acquisition import Forecast
from streamml.sweep.engine import MetricsSource, ModelProgress, Redeliver, SweepEngine
from streamml.sweep.publish import Publish, PublishingStore
from streamml.sweep.schedulers import Scheduler, SchedulerOptions
from streamml.sweep.schedulers.options import (
    FluxOptions,
    KubernetesOptions,
    LocalOptions,
    SlurmCliOptions,
    SlurmRestOptions,
)
from streamml.sweep.state import StateStore
from streamml.sweep.steering import Predictor
from streamml.sweep.stopping import HeldOutPredict
from streamml.vocabulary.lammpssweep import LammpsSweepSpec, resolved_targets
from streamml.vocabulary.sweepsummary import SweepSummary
from streamml.vocabulary.targets import learner_models

#: a ConfigMap holds at most 1 MiB, metadata and base64 of binary files included
KUBERNETES_INPUT_BYTES = 700_000


def scheduler_options(
    spec: LammpsSweepSpec,
    workdir: Path,
    *,
    namespace: str | None = None,
    slurm_token: str | None = None,
) -> SchedulerOptions:
    """The typed ``spec.scheduler`` as the options its backend is built from."""
    s = spec.scheduler
    if s.type == "local":
        root = str(workdir / "jobs")
        return LocalOptions(root=root, max_parallel=s.max_local_jobs or spec.parallelism)
    if s.type == "slurm":
        return SlurmCliOptions(partition=s.partition)
    if s.type == "slurm-rest":
        if not slurm_token and not s.token_file:
            raise SpecError(
                "slurm-rest needs a JWT: scheduler.jwtSecretRef (operator) or scheduler.tokenFile",
                field="scheduler.jwtSecretRef",
            )
        return SlurmRestOptions(
            url=s.rest_url or "",  # the spec requires restUrl for slurm-rest
            user=s.rest_user or "root",
            partition=s.partition,
            token=slurm_token or None,
            token_file=None if slurm_token else s.token_file,
        )
    if s.type == "flux":
        return FluxOptions(uri=s.flux_uri)
    return KubernetesOptions(namespace=namespace or "default", image=s.image)


def build_scheduler(options: SchedulerOptions) -> Scheduler:
    """The backend; a SpecError names the spec's field (``scheduler.tokenFile``)."""
    try:
        return schedulers.build_scheduler(options)
    except SpecError as exc:
        raise SpecError(str(exc), field=f"scheduler.{exc.field or 'type'}") from exc


def credential_env(workdir: Path, access: ServerAccess) -> dict[str, str]:
    """Write the server credentials as 0600 files; jobs get the file paths, not the secrets."""
    env: dict[str, str] = {}
    secrets = workdir / "credentials"
    for key, value in (("USERNAME", access.username), ("TOKEN", access.token)):
        if not value:
            continue
        secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Atomic: jobs adopted from an earlier run read these files while this run rewrites them.
        path = write_atomic(secrets / key.lower(), value, private=True)
        env[f"STREAMML_{key}_FILE"] = str(path)
    return env


def remote_env(access: ServerAccess) -> dict[str, str]:
    env = {"STREAMML_USERNAME": access.username, "STREAMML_TOKEN": access.token}
    return {k: v for k, v in env.items() if v}


def metrics_source(access: ServerAccess) -> MetricsSource:
    """Per model: (samples learned, metrics) from the server, for the learning curve."""

    async def fetch(models: Sequence[str] | None) -> dict[str, ModelProgress]:
        from streamml.client.api import ModelServerClient

        out: dict[str, ModelProgress] = {}
        async with ModelServerClient(
            access.url, username=access.username, token=access.token
        ) as client:
            for model in models or await client.models():
                values = await client.metrics(model)
                stats = await client.stats(model)
                out[model] = ModelProgress(stats.learn.n_calls, values, stats.drift)
        return out

    return fetch


def predictor(access: ServerAccess) -> timelimits.Predict:
    """One model's prediction for a job's features (the time-limit model, before a run)."""

    async def predict(model: str, features: Mapping[str, Any]) -> float | None:
        from streamml.client.api import ModelServerClient

        async with ModelServerClient(
            access.url, username=access.username, token=access.token
        ) as client:
            reply = await client.predict(features, model=model)
        value = reply.prediction
        return float(value) if isinstance(value, int | float) else None

    return predict


def held_out_predictor(access: ServerAccess) -> HeldOutPredict:
    """stopWhen: each model's predictions of the held-out set (one batch request per model;
    a model the server does not have is left out of the answer)."""

    async def predict(
        models: Sequence[str] | None, samples: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any] | None]:
        from streamml.client.api import ModelServerClient

        async with ModelServerClient(
            access.url, username=access.username, token=access.token
        ) as client:
            served = await client.models()
            out: dict[str, list[Any] | None] = {}
            for model in models or served:
                if model not in served:
                    continue
                if "RMSE" not in await client.metrics(model):  # a classifier's metrics
                    out[model] = None
                    continue
                replies = await client.predict_batch(samples, model=model)
                out[model] = [r.prediction for r in replies]
            return out

    return predict


def forecaster(access: ServerAccess) -> Predictor:
    """Each model's forecast of an adaptive sweep's candidates (prediction and predictive
    standard deviation), from the server's batch predict; models it does not serve are left
    out."""

    async def forecast(
        models: Sequence[str] | None, samples: list[dict[str, Any]]
    ) -> dict[str, Forecast]:
        from streamml.client.api import ModelServerClient
        from streamml.vocabulary.wire import MAX_BATCH_SAMPLES

        out: dict[str, Forecast] = {}
        async with ModelServerClient(
            access.url, username=access.username, token=access.token
        ) as client:
            served = await client.models()
            for model in [m for m in models or served if m in served]:
                means: list[float | None] = []
                stds: list[float | None] = []
                for at in range(0, len(samples), MAX_BATCH_SAMPLES):
                    chunk = [{"features": f} for f in samples[at : at + MAX_BATCH_SAMPLES]]
                    for p in await client.predict_batch(chunk, model=model, uncertainty=True):
                        means.append(_number(p.prediction))
                        stds.append(p.std)
                out[model] = Forecast(mean=means, std=stds)
        return out

    return forecast


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def redeliverer(workdir: Path, access: ServerAccess) -> Redeliver:
    """Re-send what jobs spooled while the server was unreachable."""

    async def redeliver() -> None:
        from streamml.client import delivery

        spool = workdir / "spool"
        if not spool.is_dir():
            return
        report = await delivery.redeliver(
            spool,
            delivery.Credentials(access.username, access.token),
            retry=delivery.Retry(attempts=1, initial_s=0.1),
            server=access.url,
        )
        if report.failed:
            raise DeliveryError(f"{len(report.failed)} spooled results not delivered yet")

    return redeliver


def build_engine(
    name: str,
    spec: LammpsSweepSpec,
    store: StateStore,
    *,
    access: ServerAccess,
    workdir: Path,
    identity: str,
    scheduler: Scheduler,
    roots: inputs.Roots | None = None,
    config_map: Mapping[str, bytes] | None = None,
    models: Sequence[str] | None = None,
    job_prefix: Sequence[str] = (),
    generation: int | None = None,
) -> SweepEngine:
    """The engine of one sweep; its input snapshot is prepared here (SpecError naming the field).

    ``roots`` confines the paths the spec names (default: none allowed); ``config_map`` holds
    the keys of the ConfigMap the spec references (operator).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    remote = spec.scheduler.type == "kubernetes"
    prepared = inputs.prepare(
        spec.lammps, workdir.resolve(), roots or inputs.Roots(), config_map=config_map
    )
    if remote and prepared is not None and prepared.size > KUBERNETES_INPUT_BYTES:
        raise SpecError(
            f"lammps: the kubernetes scheduler carries the input in a ConfigMap (at most"
            f" {KUBERNETES_INPUT_BYTES} bytes); these files hold {prepared.size}",
            field="lammps",
        )
    ctx = jobs.JobContext(
        server=access.url,
        workdir=workdir.resolve(),
        identity=identity,
        # a sweep with several targets teaches (and asks) exactly its targets' models
        models=list(models) if models else learner_models(resolved_targets(spec), spec.models),
        # A Pod cannot read our files: the credentials go into the Job's env. Anyone who can
        # read Jobs in the namespace can read them (a secretKeyRef would be better: the
        # scheduler interface carries plain env only).
        env=remote_env(access) if remote else credential_env(workdir.resolve(), access),
        prefix=tuple(job_prefix or (jobs.REMOTE_JOB_PREFIX if remote else jobs.DEFAULT_JOB_PREFIX)),
        input_dir=prepared.directory if prepared else None,
        input_name=prepared.script if prepared else None,
        remote=remote,
    )
    engine = SweepEngine(
        name,
        spec,
        scheduler,
        store,
        ctx,
        metrics=metrics_source(access),
        redeliver=redeliverer(workdir.resolve(), access),
        generation=generation,
        predict=forecaster(access) if spec.sampling.method == "adaptive" else None,
        held_out=held_out_predictor(access) if spec.stop_when is not None else None,
        wall_time=predictor(access) if spec.resources.predicted_time_limit else None,
    )
    # the server's dashboard shows the sweep: each saved status is published to it too
    engine.store = PublishingStore(store, lambda: engine.spec, summary_publisher(name, access))
    return engine


def summary_publisher(name: str, access: ServerAccess) -> Publish:
    """``PUT /api/sweeps/{name}`` on the sweep's model server (its write credential)."""

    async def publish(summary: SweepSummary) -> None:
        from streamml.client.api import ModelServerClient

        async with ModelServerClient(
            access.url, username=access.username, token=access.token
        ) as client:
            await client.put_sweep(name, summary)

    return publish
