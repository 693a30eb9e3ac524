"""Overlay networks as one host runs them (Docker's classic overlay, muslind's ``drivers/overlay.py``).

An engine gives each overlay network a namespace of its own holding a bridge and a vxlan device, and
pins it with a bind mount of its nsfs file. The Docker API does not say where, so the pins are found
in the engine's mount table (``/proc/<pid>/mountinfo``): an nsfs mount whose file is named after the
first 12 characters of an overlay network's id, in a directory named ``overlay`` (libnetwork's and
muslind's layout). It is opened through ``/proc/<pid>/root``, so an engine in a mount namespace of its
own is read as well. Engines sharing a mount namespace (the tests', a lab's) see each other's pins of
the same network: the engine's own is the one whose vxlan sends from an address of the engine's host.

Read in that namespace: the bridge and its ports, the vxlan (VNI, port, local address; its underlay
device is the host's, named by the vxlan's IFLA_VXLAN_LINK in the host's namespace), and the remote
endpoints from the vxlan's forwarding entries and permanent neighbours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from muslin.kernel import neighbour, netns, snapshot
from muslin.kernel.snapshot import Namespace

from .model import FdbPeer, Overlay, OverlayPeer, OverlayPort, Tunnel

OVERLAY_DRIVER = "overlay"
PIN_DIRECTORY = "overlay"
SHORT_ID = 12
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Found:
    """An overlay network's namespace as read: the model, and the snapshot that ports are matched in."""
    overlay: Overlay
    ns: Namespace


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def pinned_namespaces(pid: int) -> dict[str, list[str]]:
    """Overlay namespaces pinned in the engine's mount namespace: the pin's name (a short network id) →
    paths to open them (several when other engines share the mount namespace)."""
    try:
        text = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return {}
    return pins_in(text, f"/proc/{pid}/root")


def pins_in(mountinfo: str, root: str) -> dict[str, list[str]]:
    """The overlay pins of a mount table: nsfs mounts in a directory named ``overlay``, under ``root``."""
    found: dict[str, list[str]] = {}
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        fields = before.split()
        if not sep or len(fields) < 5 or after.split()[:1] != ["nsfs"]:
            continue
        mount_point = Path(_unescape(fields[4]))
        if mount_point.parent.name == PIN_DIRECTORY:
            found.setdefault(mount_point.name, []).append(f"{root}{mount_point}")
    return found


def read(networks: list[dict], pid: int, host: Namespace) -> list[Found]:
    """Every overlay network of ``networks`` (the engine's `/networks`) that has a namespace on this host."""
    pins = pinned_namespaces(pid)
    local = {a.split("/")[0] for link in host.links for a in link.addresses}
    out = []
    for doc in networks:
        if doc.get("Driver") != OVERLAY_DRIVER:
            continue
        candidates = []
        for path in pins.get(doc["Id"][:SHORT_ID], []):  # none: not programmed on this host (yet)
            try:
                candidates.append(_read_one(doc, path, host))
            except OSError:
                continue  # removed meanwhile
        own = [f for f in candidates if f.overlay.vxlan.local in local]
        if own or len(candidates) == 1:
            out.append((own or candidates)[0])
    return out


def _read_one(doc: dict, path: str, host: Namespace) -> Found:
    with netns.iproute(path) as ipr:
        ns = snapshot.read_with(ipr, path)
        vxlan = next((link for link in ns.links if link.kind == "vxlan"), None)
        neighbours = neighbour.permanent_neighbours(ipr, vxlan.index) if vxlan else {}
    bridge = next((link for link in ns.links if link.kind == "bridge"), None)
    address_of = {mac.lower(): str(ip) for ip, mac in neighbours.items()}
    peers = tuple(sorted((OverlayPeer(vtep=f.remote, mac=f.mac, address=address_of.get(f.mac.lower()))
                          for f in (vxlan.fdb if vxlan else ())), key=lambda p: (p.vtep, p.address or "", p.mac)))
    underlay = host.link(vxlan.vxlan.underlay_index) if vxlan and vxlan.vxlan else None
    tunnel = Tunnel(name=vxlan.name if vxlan else "?", kind="vxlan", addresses=(), mtu=vxlan.mtu if vxlan else 0,
                    vni=vxlan.vxlan.vni if vxlan and vxlan.vxlan else None,
                    port=vxlan.vxlan.port if vxlan and vxlan.vxlan else None,
                    local=vxlan.vxlan.local if vxlan and vxlan.vxlan else None,
                    underlay=underlay.name if underlay else None,
                    peers=tuple(sorted(FdbPeer(f.mac, f.remote) for f in (vxlan.fdb if vxlan else ()))))
    ports = tuple(OverlayPort(name=link.name, container="?", ifname="", address=None, mac="")
                  for link in ns.links if bridge is not None and link.master == bridge.index and link.kind == "veth")
    config = (doc.get("IPAM") or {}).get("Config") or []
    overlay = Overlay(network=doc["Name"], id=doc["Id"], netns=path, subnet=config[0].get("Subnet") if config else None,
                      bridge=bridge.name if bridge else "?", mtu=bridge.mtu if bridge else 0, vxlan=tunnel,
                      ports=ports, peers=peers)
    return Found(overlay, ns)
