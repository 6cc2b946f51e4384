"""``fastsam3d web``: start the page's trame server for one image."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def predictor_for(
    model: str,
    weights: Path | None,
    server: str | None,
    token: str | None,
    truth: Path | None,
    truth_value: int | None = None,
) -> Any:
    """What the page's logic runs: the oracle on ``truth``, the remote service, or a local
    model (as ``setModel`` arguments)."""
    if model == "oracle":
        from fastsam3d_core import Volume
        from fastsam3d_core.session import OraclePredictor

        if truth is None:
            raise ValueError("--model oracle needs --truth LABEL (the label it answers with)")
        return OraclePredictor(Volume.from_file(truth), truth_value)
    if server is not None:
        return (model, "remote", str(weights) if weights else None, server, token)
    return (model, "auto", str(weights) if weights else None, None, None)


# A session process stops once no tab has been connected for this long (a reload reconnects
# well within it), or when none connected this long after it started.
SESSION_IDLE_S = 60


def run(
    image: Path,
    predictor: Any,
    host: str,
    port: int,
    focus: tuple | None = None,
    idle_timeout_s: int | None = None,
) -> None:
    """Serve the page (one scene) until interrupted, or ``idle_timeout_s`` without a tab."""
    from trame.app import get_server

    from .app import SegmentationPage

    server = get_server(client_type="vue3")
    SegmentationPage(server, image, predictor, focus)
    server.start(
        host=host,
        port=port,
        open_browser=False,
        show_connection_info=False,
        timeout=idle_timeout_s or 0,
    )
