#!/usr/bin/env bash
# Run a command in a network namespace that has only loopback, so nothing a test starts (Ray's
# head, Serve replicas, torch's rendezvous, SeaweedFS) can be reached from, or reach, another host.
# As root, `unshare --net` suffices; otherwise a user namespace maps us to root inside it.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then flags=(--net); else flags=(--net --map-root-user); fi
exec unshare "${flags[@]}" bash -c 'ip link set lo up 2>/dev/null || ifconfig lo up; exec "$@"' isolated "$@"
