"""Loads the UML kernel's modules with busybox's insmod (the machine has no kmod), each after the ones it
needs (modules.dep): the named ones, or with --all every networking, crypto and overlayfs module."""

from __future__ import annotations

import os
import subprocess
import sys

MODULES = "/usr/lib/uml/modules/" + os.uname().release + "/"
ALL_UNDER = ("kernel/net/netfilter/", "kernel/net/ipv4/", "kernel/net/bridge/", "kernel/net/xfrm/", "kernel/crypto/",
             "kernel/fs/overlayfs/", "kernel/drivers/net/veth", "kernel/drivers/net/vxlan", "kernel/drivers/net/dummy",
             "kernel/drivers/net/macvlan", "kernel/net/8021q")
SKIPPED = ("tcrypt", "ipvs")  # a crypto benchmark that runs at load; IPVS, which nothing here uses


def main(names: list[str]) -> None:
    deps: dict[str, list[str]] = {}
    with open(MODULES + "modules.dep") as f:
        for line in f:
            path, _, needs = line.partition(":")
            deps[path] = needs.split()
    by_name = {os.path.basename(p).removesuffix(".ko").replace("-", "_"): p for p in deps}
    loaded: set[str] = set()

    def load(path: str) -> None:
        if path in loaded:
            return
        loaded.add(path)
        for need in reversed(deps[path]):
            load(need)
        subprocess.run(["busybox", "insmod", MODULES + path], capture_output=True, check=False)

    if names == ["--all"]:
        wanted = [p for p in deps if p.startswith(ALL_UNDER) and not any(s in p for s in SKIPPED)]
    else:
        wanted = [by_name[n.replace("-", "_")] for n in names]
    for path in wanted:
        load(path)


if __name__ == "__main__":
    main(sys.argv[1:])
