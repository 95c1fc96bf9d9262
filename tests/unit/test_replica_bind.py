"""deployments/replica_bind.py: wildcard gRPC addresses become the node's, others pass through;
sfsr/cluster.py adds the module to the head's preload list once. The effect on a live Serve app
is checked in tests/integration/test_serve.py (test_every_listener_is_on_loopback)."""

from __future__ import annotations

from ray._common import tls_utils

from deployments import replica_bind
from sfsr.cluster import REPLICA_BIND_MODULE, preload_modules


def test_wildcards_become_the_node_address() -> None:
    assert replica_bind.on_node("[::]:0", "127.0.0.1") == "127.0.0.1:0"
    assert replica_bind.on_node("0.0.0.0:9000", "10.1.2.3") == "10.1.2.3:9000"
    assert replica_bind.on_node("[::]:0", "::1") == "[::1]:0"


def test_other_addresses_are_kept() -> None:
    for address in ("127.0.0.1:0", "10.0.0.5:9000", "[::1]:8000", "unix:/tmp/sock"):
        assert replica_bind.on_node(address, "127.0.0.1") == address


def test_install_wraps_rays_function_once() -> None:
    assert replica_bind.install() and replica_bind.install()
    wrapped = tls_utils.add_port_to_grpc_server
    assert wrapped.sfsr_on_node and not getattr(wrapped.__wrapped__, "sfsr_on_node", False)


def test_the_head_preloads_the_module_once() -> None:
    assert preload_modules("") == REPLICA_BIND_MODULE
    assert preload_modules("a,b") == f"a,b,{REPLICA_BIND_MODULE}"
    assert preload_modules(f"a,{REPLICA_BIND_MODULE}") == f"a,{REPLICA_BIND_MODULE}"
