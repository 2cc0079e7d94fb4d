"""The Monitoring page: `reinforcement monitor` serves it (see `app.create_app`, `security.Access`)."""

from __future__ import annotations

from .app import MonitorSettings, create_app
from .security import Access, MonitorRefused

__all__ = ["Access", "MonitorRefused", "MonitorSettings", "create_app", "serve"]


def serve(app, host: str, port: int) -> None:
    """Serve `app` until Ctrl-C; open pages only poll, so shutting down takes at most about a second."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=1, server_header=False)
