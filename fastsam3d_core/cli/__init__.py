"""The ``fastsam3d`` command line: a thin shell over the library.

:func:`main` is the console script. It runs the Typer application and turns every way a command
can fail on bad input into one line on stderr (``error: …``) and a non-zero exit status:

* a usage error (unknown option, bad value): status 2;
* an error of the library about the user's input or files (``ValueError``, ``OSError``, the
  weights errors, an unreachable or refusing encoder service): status 1;
* anything else is a defect of this program: status 70 and one line asking to report it;
  ``FASTSAM3D_DEBUG=1`` shows the traceback instead.

Python warnings (and ITK's, which the IO layer turns into Python warnings) are shown as one
``warning: …`` line each.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from typing import Optional

import typer

from ..messages import one_line, os_error_reason
from .app import app

__all__ = ["app", "main"]

USAGE_STATUS = 2
INPUT_STATUS = 1
DEFECT_STATUS = 70
INTERRUPTED_STATUS = 130
DEBUG_VARIABLE = "FASTSAM3D_DEBUG"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``fastsam3d`` with ``argv`` (default: the process's arguments); return the status."""
    from ..serving import RemoteError
    from ..weights import WeightsError

    arguments = list(sys.argv[1:] if argv is None else argv)
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        result = app(args=arguments, prog_name="fastsam3d", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except (typer.Exit, typer.Abort) as stop:  # raised where Typer does not map them itself
        return int(getattr(stop, "exit_code", INTERRUPTED_STATUS))
    except (ValueError, OSError, WeightsError, RemoteError, MemoryError) as error:
        _error(_describe(error))
        return INPUT_STATUS
    except Exception as error:
        if _is_usage_error(error):
            return _usage_error(error)
        if isinstance(error, ModuleNotFoundError) and error.name == "torch":  # the client's
            _error(
                "this needs torch, which is not installed here (the torch-free client runs "
                "`fastsam3d segment --server`); install torch and fastsam3d-core for the rest"
            )
            return INPUT_STATUS
        if type(error).__name__ == "OutOfMemoryError":  # torch's, for CUDA and MPS
            _error(f"out of GPU memory ({one_line(str(error))[:160]}); try --device cpu")
            return INPUT_STATUS
        if os.environ.get(DEBUG_VARIABLE):
            raise
        _error(
            f"internal error ({type(error).__name__}: {error}); please report it with the "
            f"command line; {DEBUG_VARIABLE}=1 shows the details"
        )
        return DEFECT_STATUS
    finally:
        warnings.showwarning = previous


def _describe(error: BaseException) -> str:
    if isinstance(error, MemoryError):
        return "out of memory; close other programs, or use a smaller image"
    if isinstance(error, OSError):
        return os_error_reason(error)
    return str(error) or type(error).__name__


def _error(message: str) -> None:
    typer.echo(f"error: {one_line(message)}", err=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    # The default display echoes the source line that warned, which means nothing to a user.
    typer.echo(f"warning: {one_line(str(message))}", err=True)


def _is_usage_error(error: Exception) -> bool:
    # Click's UsageError, from Typer's vendored click or click itself, whichever is installed.
    return any(cls.__name__ == "UsageError" for cls in type(error).__mro__)


def _usage_error(error: Exception) -> int:
    context = getattr(error, "ctx", None)
    if type(error).__name__ == "NoArgsIsHelpError":
        typer.echo(error.format_message())  # type: ignore[attr-defined]
        return USAGE_STATUS
    command = context.command_path if context is not None else "fastsam3d"
    _error(f"{error.format_message()} (see `{command} --help`)")  # type: ignore[attr-defined]
    return int(getattr(error, "exit_code", USAGE_STATUS))
