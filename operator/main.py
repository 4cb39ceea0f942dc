"""The kopf entry module: names the handler modules, nothing else.

Handlers live in their own modules and delegate to typed domain functions. They are registered at
start-up, with the operator's settings, by :func:`streamml.operator.command.build` (not at import,
so importing this module has no side effects).
"""

from __future__ import annotations

from streamml.operator import streammodel_handlers, sweep_handlers

__all__ = ["streammodel_handlers", "sweep_handlers"]
