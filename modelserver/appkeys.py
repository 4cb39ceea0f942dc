"""Typed application state (``web.AppKey``), shared by the app factory, middleware and views."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from streamml.modelserver.auth import Authenticator
from streamml.modelserver.events import EventHub
from streamml.modelserver.service import ModelService
from streamml.modelserver.settings import ServerSettings
from streamml.modelserver.telemetry import Telemetry
from streamml.vocabulary.modelcost import CostLimits

if TYPE_CHECKING:
    from streamml.modelserver.dashboard import Dashboard
    from streamml.modelserver.rotation import CredentialWatcher

SETTINGS = web.AppKey("settings", ServerSettings)
AUTH: web.AppKey[Authenticator | None] = web.AppKey("auth")
SERVICE = web.AppKey("service", ModelService)
HUB = web.AppKey("hub", EventHub)
TELEMETRY = web.AppKey("telemetry", Telemetry)
READY = web.AppKey("ready", list[bool])
LIMITS = web.AppKey("limits", CostLimits)
DASHBOARD: web.AppKey[Dashboard] = web.AppKey("dashboard")
CREDENTIALS: web.AppKey[CredentialWatcher | None] = web.AppKey("credentials")
