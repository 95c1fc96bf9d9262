"""tests/fixtures/listeners.py reads /proc/net/tcp*: addresses, ports, LISTEN rows and loopback,
on a synthetic table and on a socket this test opens."""

from __future__ import annotations

import ipaddress
import os
import socket

from tests.fixtures import listeners

# Rows as the kernel writes them (x86: each 32-bit word little-endian). States: 0A LISTEN, 01 ESTABLISHED.
TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
   1: 00000000:A2B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1
   3: 0A00A8C0:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0 100 0 0 10 0
   4: 0200007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0 100 0 0 10 0
"""
TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue tr
   0: 00000000000000000000000000000000:9C40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 666 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:1F41 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1F42 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 888 1 0 100 0 0 10 0
"""  # noqa: E501


def test_ipv4_rows() -> None:
    rows = listeners.parse(TCP)
    assert [str(r) for r in rows] == ["127.0.0.1:8080", "0.0.0.0:41651", "192.168.0.10:22", "127.0.0.2:80"]
    assert [r.loopback for r in rows] == [True, False, False, True]
    assert [r.inode for r in rows] == [111, 222, 444, 555]  # the ESTABLISHED row is not a listener


def test_ipv6_rows() -> None:
    rows = listeners.parse(TCP6)
    expected = [("::", 40000), ("::1", 8001), ("::ffff:127.0.0.1", 8002)]
    assert [(r.address, r.port) for r in rows] == [(ipaddress.ip_address(a), p) for a, p in expected]
    assert [r.loopback for r in rows] == [False, True, True]


def test_a_live_loopback_socket_is_found_with_its_owner() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        mine = [r for r in listeners.listeners() if r.port == port]
        assert len(mine) == 1 and mine[0].loopback and str(mine[0].address) == "127.0.0.1"
        assert listeners.owners({mine[0].inode})[mine[0].inode].startswith(f"pid {os.getpid()} ")
