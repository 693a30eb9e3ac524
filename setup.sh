#!/usr/bin/env bash
# Installs everything muslin needs on a fresh Debian 12, as root, idempotently and without questions:
# the system packages, a virtualenv with the pinned Python dependencies, and the console scripts on PATH.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
HERE=$PWD

# `tools` lists every command muslin and its tests run, with its package: install what is missing.
need_apt=()
while read -r tool package; do
    case "$tool" in ''|'#'*) continue;; esac
    command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 \
        || need_apt+=("$package")
done < tools
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# the library muslind's nftables firewall backend calls in process (nft depends on it too)
/sbin/ldconfig -p | grep -q 'libnftables\.so\.1 ' || need_apt+=(libnftables1)
# the font the topology drawings are set in (muslin topo --format svg, the lab ui)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    # The docker CLI comes inside docker.io: policy-rc.d keeps the package from starting a daemon of its own.
    apt-get install -y -q --no-install-recommends $(printf '%s\n' "${need_apt[@]}" | sort -u) >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
.venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
for cmd in muslind muslin muslin-flanneld; do ln -sf "$HERE/.venv/bin/$cmd" "/usr/local/bin/$cmd"; done
echo "muslin is set up: $(command -v muslind) $(command -v muslin) $(command -v muslin-flanneld)"
