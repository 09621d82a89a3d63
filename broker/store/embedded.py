"""The embedded PostgreSQL server (the pgserver wheel ships its binaries) for a broker started without a URL."""

from __future__ import annotations

from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def start(data_dir: Path) -> str:
    """Start (or reuse) a PostgreSQL server whose data lives in data_dir/pgdata; returns its connection URL.

    The server listens on a unix socket only. It is stopped when the last process using it exits, and its data
    survives for the next start.
    """
    import pgserver  # imported here: only the embedded mode needs it, and it is slow to import

    pgdata = data_dir / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    url: str = server.get_uri()
    log.info("embedded postgresql ready", pgdata=str(pgdata))
    return url
