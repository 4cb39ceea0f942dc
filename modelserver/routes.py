"""The URL table: riverapi's paths (trailing slashes) plus the extensions and operations."""

from __future__ import annotations

from aiohttp import web

from streamml.modelserver import (
    dashboard,
    openapi,
    pages,
    provenance_view,
    streams,
    targetlearns,
    views,
)


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get("/api/", views.service_info),
            web.get("/api/auth/token/", views.auth_token),
            web.get("/api/auth/token", views.auth_token),  # the realm URL, as riverapi follows it
            web.get("/api/openapi.json", openapi.document_view),
            web.get("/api/models/", views.list_models),
            web.post("/api/model/{flavor}/", views.upload_model),
            web.post("/api/model/{flavor}/{name}/", views.upload_model),
            web.get("/api/model/download/{name}/", views.download_model),
            web.get("/api/model/{name}/", views.get_model_json),
            web.delete("/api/model/", views.delete_model),
            web.post("/api/learn/", views.learn),
            web.post("/api/learn/batch/", views.learn_batch),
            web.post("/api/learn/targets/", targetlearns.learn_targets),
            web.post("/api/predict/", views.predict),
            web.post("/api/predict/batch/", views.predict_batch),
            web.post("/api/label/", views.label),
            web.get("/api/metrics/", views.metrics),
            web.get("/api/stats/", views.stats),
            web.get("/api/provenance/{model}", provenance_view.model_provenance),
            web.get("/api/stream/events/", streams.stream_events),
            web.get("/api/stream/metrics/", streams.stream_metrics),
            web.get("/api/stream/dashboard/", streams.stream_dashboard),
            web.get("/healthz", views.healthz),
            web.get("/readyz", views.readyz),
            web.get("/metrics", views.prometheus),
            # the dashboard (issue 13): pages, login, and the data the page draws
            web.get("/", pages.root),
            web.get("/dashboard", pages.to_dashboard),
            web.get("/dashboard/", pages.dashboard_page),
            web.get("/dashboard/login", pages.login_form),
            web.post("/dashboard/login", pages.login),
            web.post("/dashboard/logout", pages.logout),
            web.get("/dashboard/{asset}", pages.static_asset),
            web.get("/api/dashboard/models", dashboard.models_overview),
            web.get("/api/history/{model}", dashboard.model_history),
            web.get("/api/sweeps", dashboard.list_sweeps),
            web.get("/api/sweeps/{name}", dashboard.get_sweep),
            web.put("/api/sweeps/{name}", dashboard.put_sweep),
            web.delete("/api/sweeps/{name}", dashboard.delete_sweep),
        ]
    )
