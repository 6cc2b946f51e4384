"""One browser tab's session process: ``python -m fastsam3d_web.session PORT``.

The launcher (:mod:`fastsam3d_web.launcher`) starts one per tab, with the page's settings in the
environment (:func:`fastsam3d_web.start.session_environment`), never on the command line, which
every user of the machine sees (``ps``). It serves the page on ``PORT`` until its tab has gone,
it idles, or it is stopped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from fastsam3d_core.messages import one_line, os_error_reason

from .start import serve_session, settings_from_environment
from .timeline import mark

USAGE = "usage: python -m fastsam3d_web.session PORT (started by `fastsam3d web`)"
INPUT_STATUS = 1  # as the command line's: a refused input, said in one line
INTERRUPTED_STATUS = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Serve one session on the port in ``argv`` (default: the process's arguments), with the
    settings in this process's environment; return the exit status."""
    mark("session: its module imported")
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) != 1 or not arguments[0].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    try:
        serve_session(settings_from_environment(os.environ), int(arguments[0]))
    except KeyboardInterrupt:
        return INTERRUPTED_STATUS
    except OSError as error:
        print(f"error: {one_line(os_error_reason(error))}", file=sys.stderr)
        return INPUT_STATUS
    except MemoryError:
        print("error: out of memory; close other programs, or use a smaller image", file=sys.stderr)
        return INPUT_STATUS
    except ValueError as error:
        print(f"error: {one_line(str(error)) or type(error).__name__}", file=sys.stderr)
        return INPUT_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
