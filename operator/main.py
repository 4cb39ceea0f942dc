"""The kopf entry module: registers handlers, nothing else.

Handlers live in their own modules and delegate to typed domain functions; importing them here
registers them with kopf's default registry.
"""

from __future__ import annotations

from streamml.operator import streammodel_handlers, sweep_handlers

__all__ = ["streammodel_handlers", "sweep_handlers"]
