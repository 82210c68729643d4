"""The devices JAX sees: what they are, how much memory they report, how precise their float32
matmuls are by default, and which versions drive them (``jaxprop devices`` prints this)."""

from __future__ import annotations

import importlib.metadata
import os

import jax

BACKENDS = ("cpu", "gpu", "tpu")

# What a float32 matmul does at jax's default precision (jax.default_matmul_precision unset).
DEFAULT_FLOAT32_MATMUL = {
    "cpu": "full float32",
    "gpu": "TF32 on NVIDIA Ampere and newer (10-bit mantissa inputs); full float32 on older GPUs",
    "tpu": "bfloat16 passes",
}

INSTALL_HINT = ('for NVIDIA GPUs install jax with its CUDA plugin: pip install -e ".[cuda13]" '
                '(or ".[cuda12]"), see the README')


def backends() -> dict[str, list]:
    """``{backend: [devices]}`` for every backend present (``cpu``, ``gpu``, ``tpu``)."""
    out = {}
    for name in BACKENDS:
        try:
            devices = jax.devices(name)
        except RuntimeError:
            continue
        if devices:
            out[name] = devices
    return out


def require_backends(names) -> None:
    """Raise ``ValueError`` naming every backend in ``names`` that JAX does not have here."""
    present = backends()
    missing = [n for n in names if n not in present]
    if missing:
        hint = f"; {INSTALL_HINT}" if "gpu" in missing else ""
        raise ValueError(
            f"no {' or '.join(missing)} backend here: JAX sees only "
            f"{', '.join(f'{k} ({len(v)})' for k, v in present.items())}{hint}")


def memory(device) -> dict | None:
    """``bytes_limit``, ``bytes_in_use`` and ``peak_bytes_in_use`` (a high-water mark since the
    process started) from ``device.memory_stats()``, those it has; None where the backend reports
    none (CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics raise or return None
        return None
    if not stats:
        return None
    keys = ("bytes_limit", "bytes_in_use", "peak_bytes_in_use")
    return {k: int(stats[k]) for k in keys if k in stats} or None


def gib(nbytes: int) -> str:
    """``"1.5 GiB"``: a number of bytes in gibibytes, one decimal (thousands separated)."""
    return f"{nbytes / 2**30:,.1f} GiB"


def device_memory_bytes() -> int | None:
    """The memory of the default device: its ``bytes_limit`` (:func:`memory`, a GPU's), else the
    host's available memory (the CPU's; ``None`` when unknown)."""
    limit = (memory(jax.devices()[0]) or {}).get("bytes_limit")
    return limit if limit else _host_available_bytes()


def _host_available_bytes() -> int | None:
    """The host memory this process can still use: ``MemAvailable`` of ``/proc/meminfo`` (else
    the available physical pages), or less under an address-space limit (``ulimit -v``);
    ``None`` when unknown."""
    known = [n for n in (_physical_available_bytes(), _address_space_left()) if n is not None]
    return min(known) if known else None


def _address_space_left() -> int | None:
    """What ``ulimit -v`` (``RLIMIT_AS``) leaves this process beyond its present size."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError, AttributeError):
        return None
    return max(soft - size, 0)


def _physical_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _versions() -> dict:
    versions = {"jax": jax.__version__}
    for dist in sorted(d.metadata["Name"] for d in importlib.metadata.distributions()
                       if d.metadata["Name"]):
        name = dist.lower().replace("_", "-")
        if name == "jaxlib" or name.startswith(("jax-cuda", "jax-rocm", "libtpu")):
            versions[name] = importlib.metadata.version(dist)
    return versions


def describe() -> dict:
    """A JSON-ready description of this JAX installation and its devices.

    Returns:
      ``{"default_backend", "versions": {"jax", "jaxlib", plugins...}, "x64",
      "default_matmul_precision", "float32_matmul": {backend: what it does},
      "devices": [{"id", "backend", "kind", "process", "memory": {bytes_limit, ...} or None}]}``.
    """
    present = backends()
    devices = [
        {"id": f"{name}:{d.id}", "backend": name, "kind": d.device_kind,
         "process": d.process_index, "memory": memory(d)}
        for name, devs in present.items() for d in devs
    ]
    precision = jax.config.jax_default_matmul_precision
    return {
        "default_backend": jax.default_backend(),
        "versions": _versions(),
        "x64": bool(jax.config.jax_enable_x64),
        "default_matmul_precision": precision or "default",
        "float32_matmul": {name: ("as set: " + precision) if precision
                           else DEFAULT_FLOAT32_MATMUL.get(name, "backend default")
                           for name in present},
        "devices": devices,
    }
