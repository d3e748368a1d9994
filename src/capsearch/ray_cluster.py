"""Joining a Ray cluster, for the Ray engine and Ray Train alike: the address checked first, capsearch's own code
shipped to the workers, Ray's log lines kept off the stage's output, and a Ray error turned into one line.

Imports Ray, so only the Ray paths import this module (the ``capsearch[ray]`` extra).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import ray

_ENGINE_ERROR = re.compile(r"EngineError: (.+)")


def one_line(exc: BaseException) -> str:
    """The EngineError message inside a Ray error (which carries a traceback), else its last line."""
    found = _ENGINE_ERROR.findall(str(exc))
    if found:
        return found[-1].strip()
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (``auto``: the one ``ray start`` runs here), or start a local Ray when
    None; True when this call started Ray (the caller shuts it down).

    Ray's workers import the capsearch the driver runs (this file's ``src/``, the code DVC hashes), not whatever
    else is installed on the node; Ray's own log lines stay out of the stage's output (its errors reach the stage
    as exceptions, which end it with one line).
    """
    if ray.is_initialized():
        return False
    if address not in (None, "auto"):
        check_reachable(address)
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(RAY_DATA_LOGGING))
    library = str(Path(__file__).resolve().parents[1])
    inherited = os.environ.get("PYTHONPATH")
    runtime_env = {"env_vars": {"PYTHONPATH": library + (os.pathsep + inherited if inherited else "")}}
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "runtime_env": runtime_env}
    if address is None:  # "local": never attach to a cluster that happens to run here
        ray.init(address="local", include_dashboard=False, **quiet)
    else:
        ray.init(address=address, **quiet)
    quiet_ray_logs()
    return True


PROBE_SECONDS = 5.0  # how long runtime.ray_address gets to accept a connection (Ray itself retries for minutes)
CLIENT_PORT = 10001  # Ray Client's port where ray:// names none


def check_reachable(address: str) -> None:
    """Refuse, in one line naming ``runtime.ray_address``, an address nothing answers at within
    :data:`PROBE_SECONDS` (``ray.init`` would retry for minutes without a word) and a ``ray://`` address without
    Ray's client installed."""
    client = address.startswith("ray://")
    target = address.removeprefix("ray://").rstrip("/")
    host, colon, port = target.rpartition(":")
    if client and not colon:
        host, port = target, str(CLIENT_PORT)
    if not host or not port.isdigit():
        raise ValueError(f"runtime.ray_address: {address!r} is not host:port, ray://host[:port] or auto")
    if client:
        try:
            import grpc  # noqa: F401 - what Ray Client needs beyond ray itself
        except ImportError:
            raise ValueError(
                f"runtime.ray_address: {address!r} needs Ray's client: pip install 'capsearch[ray]' (ray[client])"
            ) from None
    import socket

    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ValueError(
            f"runtime.ray_address: nothing answers at {host}:{port} ({why}, {PROBE_SECONDS:g} s): start the cluster "
            "there (`ray start --head`), fix the address, or set it to null for a Ray of this machine"
        ) from None


RAY_DATA_LOGGING = Path(__file__).with_name("ray_data_logging.yaml")  # Ray Data's config, console at CRITICAL


def quiet_ray_logs() -> None:
    """Ray's and Ray Data's own log lines off this process's output: the stage prints its one summary (or error)
    line, and Ray's errors reach it as exceptions anyway. Ray Data's full logs stay in the session's log folder
    (Ray Data sets its logging up again for every dataset it runs, from ``RAY_DATA_LOGGING_CONFIG``)."""
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(RAY_DATA_LOGGING))
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.CRITICAL)
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler):  # the console's: Ray Data's log file keeps all
                handler.setLevel(logging.CRITICAL)
    ray.data.DataContext.get_current().enable_progress_bars = False
