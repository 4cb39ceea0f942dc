"""lammps-stream-ml: stream simulation results into online river models.

Subpackages (mapped from the repository's top-level folders in ``pyproject.toml``):

- ``streamml.vocabulary``: the shared schemas (model specs, custom resources, wire format).
- ``streamml.modelserver``: the aiohttp + river model server (``streamml serve``).
- ``streamml.operator``: the kopf operator (``streamml operator``).
- ``streamml.clients``: job-side and user-side tools (run-lammps, sweep, watch, plot).
- ``streamml.testbed``: real local infrastructure for tests and the demo (control plane, Slurm).
"""

from __future__ import annotations

from streamml.vocabulary import RELEASE as __version__

__all__ = ["__version__"]
