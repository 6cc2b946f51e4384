"""The encoder service run in the foreground: started, served until Ctrl-C or SIGTERM, removed.

This is what ``fastsam3d serve`` does once its options are parsed; a script can do the same.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .service import ServiceOptions


def serve_until_stopped(
    options: ServiceOptions,
    scaling: int | dict[str, Any],
    gpus_per_replica: float,
    host: str,
    port: int,
    address: str | None,
    on_started: Callable[[str], None] | None = None,
) -> None:
    """Start the service (see :func:`~.service.start_service`), call ``on_started`` with its URL
    once it answers, and serve until Ctrl-C or SIGTERM; then remove it again: Ray started here
    stops with it, and in a cluster that others use (``address``) only this application goes.
    """
    # Ray is imported by start_service, not before: what it reads from the environment when
    # imported (its servers on loopback, see there) must be set first.
    from .service import start_service

    try:
        url = start_service(options, scaling, gpus_per_replica, host, port, address)
        # A process manager stops with SIGTERM: clean up as for Ctrl-C. Set after Ray starts,
        # whose own handler would abort the process. SIGINT too: a process started with SIGINT
        # ignored (a background job of a script, some test runners) would not stop on Ctrl-C.
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        if on_started is not None:
            on_started(url)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        _remove(address)


def _remove(address: str | None) -> None:
    """In a cluster that others use, remove this application only; Ray started here stops with
    this process."""
    if "ray" not in sys.modules:
        return
    import ray
    from ray import serve as ray_serve

    from .service import APP_NAME

    if not ray.is_initialized():
        pass
    elif address is None:
        ray_serve.shutdown()
    else:
        ray_serve.delete(APP_NAME)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
