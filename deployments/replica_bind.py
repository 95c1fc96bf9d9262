"""Serve replicas' inter-deployment gRPC server on the node's address instead of every interface.

Ray Serve 2.60 starts a gRPC server in every replica (ray/serve/_private/replica.py,
`_on_initialized`: `add_port_to_grpc_server(self._server, "[::]:0")`) and has no setting for its
address, so on the local platform each replica listened on all interfaces while Ray's own servers,
Serve's proxy and the S3 store listen on 127.0.0.1. Routers reach a replica at its node's IP (the
replica reports only the port), so binding the node's IP instead loses nothing.

`sfsr cluster up` (sfsr/cluster.py) starts the head with RAY_preload_python_modules naming this
module: a Ray config by which the raylet imports the listed modules in every Python worker before
the worker runs anything. Importing it wraps ray._common.tls_utils.add_port_to_grpc_server, before
replica.py imports that name; only wildcard hosts are rewritten, every other address passes
through. If a Ray upgrade renames the function, this logs an error and the listener test of
tests/integration/test_serve.py fails.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)
WILDCARD_HOSTS = frozenset({"[::]", "0.0.0.0", "::", ""})


def on_node(address: str, node_ip: str) -> str:
    """`address` ("host:port") with a wildcard host replaced by `node_ip`; others unchanged.

    >>> on_node("[::]:0", "127.0.0.1"), on_node("10.0.0.5:9000", "127.0.0.1"), on_node("[::]:0", "::1")
    ('127.0.0.1:0', '10.0.0.5:9000', '[::1]:0')
    """
    host, sep, port = address.rpartition(":")
    if not sep or host not in WILDCARD_HOSTS:
        return address
    return f"[{node_ip}]:{port}" if ":" in node_ip else f"{node_ip}:{port}"


def _wrap(add_port: Callable[[Any, str], int]) -> Callable[[Any, str], int]:
    @functools.wraps(add_port)
    def add_port_on_node(server: Any, address: str) -> int:
        import ray.util

        return add_port(server, on_node(address, ray.util.get_node_ip_address()))

    add_port_on_node.sfsr_on_node = True  # type: ignore[attr-defined]
    return add_port_on_node


def install() -> bool:
    """Wrap Ray's add_port_to_grpc_server (once); False, with an error logged, if Ray lacks it."""
    try:
        from ray._common import tls_utils
    except ImportError:
        logger.error("deployments.replica_bind: ray._common.tls_utils is gone; Serve replicas bind [::]")
        return False
    add_port = getattr(tls_utils, "add_port_to_grpc_server", None)
    if add_port is None:
        logger.error("deployments.replica_bind: Ray has no add_port_to_grpc_server; Serve replicas bind [::]")
        return False
    if not getattr(add_port, "sfsr_on_node", False):
        tls_utils.add_port_to_grpc_server = _wrap(add_port)
    replica = sys.modules.get("ray.serve._private.replica")  # imported already: it holds the old name
    if replica is not None and hasattr(replica, "add_port_to_grpc_server"):
        replica.add_port_to_grpc_server = tls_utils.add_port_to_grpc_server
    return True


install()
