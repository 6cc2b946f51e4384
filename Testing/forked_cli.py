"""Runs ``fastsam3d`` command lines and Python snippets, each in a forked child process.

One server process imports the package once (torch alone takes seconds), then forks a child per
request: the child is a real, separate process with its own exit status, file descriptors, working
folder, environment and resource limits, and runs exactly what the ``fastsam3d`` console script
runs. So a battery of a hundred bad inputs costs seconds, not minutes. The server never runs torch
itself before forking (OpenMP's thread pool does not survive a fork).

Protocol: one JSON request per line on stdin, one JSON answer per line on stdout.
Request: ``argv`` (the command line after ``fastsam3d``) or ``code`` (Python source), ``cwd``,
``env`` (set), ``unset`` (removed), ``stdout``/``stderr`` (files to write), ``timeout_s``,
``file_size_limit`` (bytes; writes past it fail with EFBIG, as on a full disk),
``address_space_limit`` (bytes; so that a regression reading a huge image cannot take the machine
down; not for cases that may start CUDA, which reserves more address space than that).
Answer: ``returncode`` (negative: killed by that signal; ``None``: killed after the timeout).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback

# Python API snippets: these are the exceptions a caller can catch and show as bad input.
BAD_INPUT_ERRORS = (ValueError, TypeError, OSError)


def _run_child(request: dict) -> int:
    os.chdir(request["cwd"])
    for name in request.get("unset", []):
        os.environ.pop(name, None)
    os.environ.update(request.get("env", {}))
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    for fd, key in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    if request.get("address_space_limit"):
        limit = int(request["address_space_limit"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if request.get("file_size_limit"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = int(request["file_size_limit"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    if "argv" in request:
        return _run_command_line(request["argv"])
    return _run_snippet(request["code"])


def _run_command_line(argv: list[str]) -> int:
    from fastsam3d_core import cli

    entry = getattr(cli, "main", None)
    try:
        if entry is not None:
            return int(entry(argv) or 0)
        cli.app(args=argv, prog_name="fastsam3d")  # standalone: always raises SystemExit
        return 0
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:
        traceback.print_exc()  # what Python prints for an exception nobody caught
        return 1


def _run_snippet(code: str) -> int:
    try:
        exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})
    except BAD_INPUT_ERRORS as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _serve_one(request: dict) -> dict:
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            code = _run_child(request)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + float(request.get("timeout_s", 120))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"returncode": os.waitstatus_to_exitcode(status)}
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"returncode": None}
        time.sleep(0.01)


def main() -> None:
    import fastsam3d_core
    import fastsam3d_core.cli  # noqa: F401  (imports typer; commands import the rest lazily)
    import fastsam3d_core.io  # noqa: F401
    import fastsam3d_core.session  # noqa: F401

    print(json.dumps({"ready": fastsam3d_core.__file__}), flush=True)
    for line in sys.stdin:
        print(json.dumps(_serve_one(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
