"""lammps-stream-ml: stream simulation results into online river models.

Subpackages (mapped from the repository's top-level folders in ``pyproject.toml``):

- ``streamml.vocabulary``: the shared schemas (model specs, custom resources, wire format).
- ``streamml.modelserver``: the aiohttp + river model server (``streamml serve``).
- ``streamml.operator``: the kopf operator (``streamml operator``).
- ``streamml.sweep``: the sweep engine, sampling and schedulers (the operator's and ``streamml
  sweep``'s).
- ``streamml.client``: the model server's HTTP client and result delivery.
- ``streamml.clients``: job-side and user-side tools (run-lammps, watch, plot, the demo).
- ``streamml.testbed``: real local infrastructure for tests and the demo (control plane, a real
  node, Slurm, Flux, Apptainer, images).

docs/architecture.md maps the rooms and what each may import.
"""

from __future__ import annotations

from streamml.vocabulary import RELEASE as __version__

__all__ = ["__version__"]
