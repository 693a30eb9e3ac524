#!/usr/bin/env bash
# Installs everything muslin needs on a fresh Debian 12, as root, idempotently and without questions:
# the system packages, a virtualenv with the pinned Python dependencies, and the console scripts on PATH.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
HERE=$PWD

need_apt=()
for tool in ip:iproute2 iptables:iptables runc:runc busybox:busybox-static etcd:etcd-server \
            etcdctl:etcd-client iperf3:iperf3 nsenter:util-linux pgrep:procps openssl:openssl; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool#*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# The docker CLI is the client the end-to-end tests drive. Debian ships it inside docker.io; install it
# without letting the package start a daemon of its own.
if ! command -v docker >/dev/null 2>&1; then need_apt+=(docker.io); fi
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
.venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
for cmd in muslind muslin muslin-flanneld; do ln -sf "$HERE/.venv/bin/$cmd" "/usr/local/bin/$cmd"; done
echo "muslin is set up: $(command -v muslind) $(command -v muslin) $(command -v muslin-flanneld)"
