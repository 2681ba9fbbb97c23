"""The one way taktline attaches to Ray: the cluster of ``RAY_ADDRESS`` (or an address given),
else a local Ray on this machine's cores.

Training on RLlib and Tune, ``compare``/``imitate``/``train-jobshop --workers``, the lookahead's
scenario workers and Ray Serve all come through :func:`attach`. A cluster address that nothing
answers is named at once (:class:`~taktline.errors.SpecError`) instead of waiting out Ray's
connection retries for minutes.

>>> check_reachable("127.0.0.1:1")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
taktline.errors.SpecError: RAY_ADDRESS: no Ray cluster answers at '127.0.0.1:1' ...
"""

from __future__ import annotations

import os
import socket

from taktline.errors import SpecError

#: Addresses that name no host to check: Ray finds (``auto``) or starts (``local``) the cluster.
SYMBOLIC = ("auto", "local")


def check_reachable(address: str, field: str = "RAY_ADDRESS", timeout_s: float = 3.0) -> None:
    """Raise :class:`SpecError` naming ``field`` unless something listens at ``address``
    (``host:port`` or ``ray://host:port``; ``auto`` and ``local`` are not checked)."""
    if address in SYMBOLIC:
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise SpecError(
            f"{field}: expected HOST:PORT (e.g. 127.0.0.1:6379, what `ray start --head` "
            f"prints) or ray://HOST:PORT, got {address!r}"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise SpecError(
            f"{field}: no Ray cluster answers at {address!r} ({exc.strerror or exc}); start "
            "one there with `ray start --head`, or unset RAY_ADDRESS to run on a local Ray"
        ) from None


def attach(
    address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = False
) -> str:
    """Attach to ``address`` (default ``RAY_ADDRESS``), else start a local Ray with
    ``num_cpus`` (default: every core); a no-op when Ray is already up in this process (a Tune
    trial, a Ray task, an earlier call). Returns what it attached to, e.g.
    ``local Ray: 2 CPUs``.

    Raises:
        SpecError: when the address is malformed or nothing answers there.
    """
    import ray

    if ray.is_initialized():
        return f"Ray: already connected, {int(ray.cluster_resources().get('CPU', 0))} CPUs"
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target:
        check_reachable(target, "--address" if address else "RAY_ADDRESS")
        ray.init(address=target, log_to_driver=log_to_driver)
        where = f"Ray cluster at {target}"
    else:
        cpus = num_cpus or os.cpu_count() or 1
        ray.init(
            address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=log_to_driver
        )
        where = "local Ray"
    return f"{where}: {int(ray.cluster_resources().get('CPU', 0))} CPUs"


__all__ = ["attach", "check_reachable"]
