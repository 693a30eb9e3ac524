"""Overlay networks as one host runs them (Docker's classic overlay, muslind's ``drivers/overlay.py``).

An engine gives each overlay network a namespace of its own holding a bridge and a vxlan device, and
pins it with a bind mount of its nsfs file. The Docker API does not say where, so the pins are found
in the engine's mount table (``/proc/<pid>/mountinfo``): an nsfs mount named after the overlay
network's id, muslind's ``<exec-root>/overlay/<first 12 of the id>`` or libnetwork's
``<exec-root>/netns/<epoch>-<first 10 of the id>``. It is opened through ``/proc/<pid>/root``, so an
engine in a mount namespace of its own is read as well. Engines sharing a mount namespace (the tests',
a lab's) see each other's pins of the same network: the engine's own is the one whose vxlan has its
socket in the engine's namespace (the vxlan's IFLA_LINK_NETNSID is the overlay namespace's id for it).

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
PIN_DIRECTORIES = ("overlay", "netns")  # muslind's, libnetwork's
PIN_NAME = re.compile(r"[0-9a-f]{12}|[0-9]+-[0-9a-f]{10}")  # muslind's, libnetwork's (<epoch>-<id>)
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Found:
    """An overlay network's namespace as read: the model, the snapshot that ports are matched in, and
    the id this namespace gives the namespace its vxlan's socket lives in."""
    overlay: Overlay
    ns: Namespace
    socket_netnsid: int | None


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
    """The candidate overlay pins of a mount table: nsfs mounts in a directory named as an engine names
    the one of its overlays' namespaces, by name, as paths under ``root``."""
    found: dict[str, list[str]] = {}
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        fields = before.split()
        if not sep or len(fields) < 5 or after.split()[:1] != ["nsfs"]:
            continue
        mount_point = Path(_unescape(fields[4]))
        if mount_point.parent.name in PIN_DIRECTORIES and PIN_NAME.fullmatch(mount_point.name):
            found.setdefault(mount_point.name, []).append(f"{root}{mount_point}")
    return found


def read(networks: list[dict], pid: int, host: Namespace) -> list[Found]:
    """Every overlay network of ``networks`` (the engine's `/networks`) that has a namespace on this host."""
    pins = pinned_namespaces(pid)
    out = []
    for doc in networks:
        if doc.get("Driver") != OVERLAY_DRIVER:
            continue
        candidates = []
        for path in pins_of(pins, doc["Id"]):  # none: not programmed on this host (yet)
            try:
                found = _read_one(doc, path, host)
                if found.socket_netnsid is not None and found.socket_netnsid == snapshot.netns_id(path, host.path):
                    candidates.append(found)
            except OSError:
                continue  # removed meanwhile
        out.extend(candidates[:1])
    return out


def pins_of(pins: dict[str, list[str]], network_id: str) -> list[str]:
    """The paths among ``pins`` that may be the network's namespace (muslind's name, libnetwork's)."""
    libnetwork = re.compile(r"[0-9]+-" + re.escape(network_id[:10]))
    return [path for name, paths in sorted(pins.items())
            if name == network_id[:12] or libnetwork.fullmatch(name) for path in paths]


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
    return Found(overlay, ns, vxlan.link_netnsid if vxlan else None)
