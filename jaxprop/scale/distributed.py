"""Several processes, one training run: JAX's multi-process runtime (``jax.distributed``).

Every process runs the same program on its own devices; ``jax.devices()`` then lists the
devices of all of them, a :func:`~jaxprop.scale.parallel.data_mesh` spans them, and the
training step's gradient all-reduce crosses process boundaries (on CPUs through gloo over
TCP). Call :func:`initialize` first in every process, before anything else touches JAX::

    initialize("10.0.0.1:1234", num_processes=2, process_id=0)   # on the first host
    initialize("10.0.0.1:1234", num_processes=2, process_id=1)   # on the second

Arguments left out come from the environment: ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, else JAX's own cluster detection (SLURM, Open MPI,
Kubernetes, Cloud TPU). When the coordinator is a loopback address (several processes on one
machine), the coordinator service and the CPU collectives are bound to loopback too.
"""

from __future__ import annotations

import ipaddress
import os
import socket

# Seconds without a heartbeat after which a process of the run counts as lost.
PEER_TIMEOUT_S = 30
# Seconds every process may take to join the run.
JOIN_TIMEOUT_S = 300

ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


def settings(coordinator: str | None = None, num_processes: int | None = None,
             process_id: int | None = None) -> dict | None:
    """The multi-process settings from the arguments, else the environment (``ENV``);
    ``None`` when neither asks for several processes. Checks what is given."""
    given = {"coordinator": coordinator, "num_processes": num_processes,
             "process_id": process_id}
    for key, var in ENV.items():
        if given[key] is None and os.environ.get(var, "").strip():
            given[key] = os.environ[var].strip()
    if all(v is None for v in given.values()):
        return None
    for key in ("num_processes", "process_id"):
        if given[key] is not None:
            try:
                given[key] = int(given[key])
            except (TypeError, ValueError):
                raise ValueError(f"--{key.replace('_', '-')} must be an integer; got "
                                 f"{given[key]!r}") from None
    n, i = given["num_processes"], given["process_id"]
    if n is not None and n < 1:
        raise ValueError(f"--num-processes must be at least 1; got {n}")
    if i is not None and (i < 0 or (n is not None and i >= n)):
        raise ValueError(f"--process-id must be in 0..{'N-1' if n is None else n - 1}; got {i}")
    if given["coordinator"] is not None:
        host, _, port = str(given["coordinator"]).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--coordinator must be HOST:PORT (e.g. 10.0.0.1:1234); got "
                             f"{given['coordinator']!r}")
    return given


def is_loopback(address: str) -> bool:
    """Whether ``HOST:PORT`` names this machine's loopback interface."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: int = JOIN_TIMEOUT_S,
               peer_timeout_s: int = PEER_TIMEOUT_S) -> dict | None:
    """Join the multi-process run (``jax.distributed.initialize``) with gloo collectives on CPUs.

    Must run before JAX starts its backends (before the first array or ``jax.devices()``).
    Arguments left out come from the environment (``ENV``); a failure to join raises
    ``ValueError``.

    Args:
      coordinator: the coordinator's ``HOST:PORT`` (process 0's); a loopback address binds the
        coordinator service and the CPU collectives to loopback.
      num_processes: the number of processes in the run.
      process_id: this process's index, ``0..num_processes-1``.
      timeout_s: seconds to wait for every process to join.
      peer_timeout_s: seconds without a heartbeat after which a process counts as lost
        (``heartbeat_timeout_seconds``; JAX's default is 100).

    Returns:
      the settings used (``{"coordinator", "num_processes", "process_id"}``), or ``None``
      (one process) when nothing asks for more.
    """
    given = settings(coordinator, num_processes, process_id)
    if given is None:
        return None
    _check_coordinator(given["coordinator"], given["process_id"])
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    _failures_raise()
    kwargs = {"initialization_timeout": timeout_s,
              "heartbeat_timeout_seconds": int(peer_timeout_s)}
    address = given["coordinator"]
    if address is not None and is_loopback(address):
        kwargs["coordinator_bind_address"] = address
        _bind_gloo_to_loopback()
    try:
        jax.distributed.initialize(address, given["num_processes"], given["process_id"],
                                   **kwargs)
    except (RuntimeError, ValueError) as e:
        why = str(e).splitlines()[0][:300] if str(e).strip() else type(e).__name__
        if "bad_cast" in why or "DEADLINE_EXCEEDED" in why:  # (the status, lost in transit)
            why = (f"not every process joined within {timeout_s} s (are all "
                   f"{given['num_processes']} started, each with its own --process-id and "
                   "the same --coordinator?)")
        raise ValueError(f"cannot join the multi-process run (coordinator {address}, "
                         f"{given['num_processes']} processes, this one "
                         f"{given['process_id']}): {why}") from None
    return given


def _check_coordinator(address: str | None, process_id: int | None) -> None:
    """Before JAX tries (and, failing, aborts the process): the coordinator's host resolves,
    and process 0 can listen on its port."""
    if address is None:
        return
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise ValueError(f"--coordinator {address}: cannot resolve the host {host!r} "
                         f"({e.strerror if isinstance(e, OSError) and e.strerror else e})") from None
    if process_id == 0 and is_loopback(address):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, int(port)))
            except OSError as e:
                raise ValueError(f"--coordinator {address}: process 0 cannot listen there "
                                 f"({e.strerror or e}; another run, or another program, "
                                 "holds the port)") from None


def _failures_raise() -> None:
    """Make JAX's distributed client report a failure to join as an exception in
    ``initialize`` rather than terminate the process from a native thread (its default, with
    no Python callback). Wraps the client's factory, when this jaxlib has that argument."""
    try:
        import inspect
        from functools import partial

        from jax._src.lib import _jax
    except ImportError:
        return
    make = getattr(_jax, "get_distributed_runtime_client", None)
    if make is None or isinstance(make, partial):
        return
    if "missed_heartbeat_callback" not in (make.__doc__ or "") and \
            "missed_heartbeat_callback" not in str(_signature(inspect, make)):
        return
    _jax.get_distributed_runtime_client = partial(make, missed_heartbeat_callback=_lost)


def _signature(inspect, fn):
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return ""


def _lost(*_) -> None:
    """The distributed client's callback when the coordination service fails after joining (a
    peer's heartbeats stopped): one line and exit 1 (the run's last chunk is saved)."""
    os.write(2, b"jaxprop: error: lost a process of the multi-process run (no heartbeat within "
                b"--peer-timeout); start every process again with --resume\n")
    os._exit(1)


def _bind_gloo_to_loopback() -> None:
    """Make the CPU collectives listen on 127.0.0.1 rather than on the host name's address
    (JAX creates them without a host name; this wraps its factory, when it has one)."""
    try:
        from functools import partial

        from jax._src import xla_bridge
    except ImportError:
        return
    make = getattr(xla_bridge._jax, "make_gloo_tcp_collectives", None)
    if make is not None and not isinstance(make, partial):
        xla_bridge._jax.make_gloo_tcp_collectives = partial(make, hostname="127.0.0.1")
