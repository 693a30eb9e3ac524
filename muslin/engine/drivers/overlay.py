"""The overlay driver: one L2 segment across engines, over VXLAN, as libnetwork's classic overlay.

Per network, as libnetwork: a namespace of its own, pinned at ``<exec-root>/overlay/<id>``, so the host
has no route into the overlay and its firewall (FORWARD policy, bridge netfilter, connection tracking)
never sees the overlay's frames; in it
- a bridge ``br0`` that the containers' veths are ports of (MTU: the underlay's minus 50, the VXLAN
  header's room, so 1450 on a 1500 underlay);
- a vxlan ``vxlan0`` on that bridge, created from the daemon's namespace into it, so its UDP socket is
  the daemon's (on the underlay): the network's VNI, UDP 4789, local address the engine's advertise
  address, no learning and ARP proxy. Nothing is flooded over the underlay: every remote
  endpoint is a forwarding entry (its MAC to its engine's VTEP) and a permanent neighbour (its IP to
  its MAC) written from the endpoint records the engines publish in the cluster store
  (``sync_peers``), and the vxlan answers the containers' ARP requests from those neighbours.
Containers reach the outside through the gateway bridge (``gwbridge``), not through the overlay.
An encrypted network (``--opt encrypted``) is the same, with veths 26 bytes narrower for ESP; its VXLAN
packets are put in ESP by the engine's IPsec state (``overlay_encryption``), which ``GlobalNetworks``
keeps; on a kernel without ESP it is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError

from muslin.errors import EngineError, Forbidden, InvalidArgument
from muslin.kernel import address, link, neighbour, netns, tunnel, xfrm

from ..model import Endpoint, Network
from ..overlay_encryption import REQID, encrypted_mtu
from ..settings import OverlaySettings
from .base import HostNetlink, OnHostLinks, configure_endpoint_link
from .bridge import host_ifname

VXLAN_PORT = 4789  # IANA's, as libnetwork's overlay uses
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8
OPT_VNI = "com.docker.network.driver.overlay.vxlanid_list"
OPT_ENCRYPTED = "encrypted"
BRIDGE = "br0"
VXLAN = "vxlan0"
SANDBOX_NAME = re.compile(r"[0-9a-f]{12}")


@dataclass(frozen=True)
class Underlay:
    """Where this engine's VXLAN traffic leaves: the advertise address and its interface."""

    ip: IPv4Address
    index: int
    mtu: int


@dataclass(frozen=True, order=True)
class Peer:
    """A remote endpoint of an overlay network, as its engine published it."""

    ip: IPv4Address
    mac: str
    vtep: IPv4Address


def settings_of(net: Network) -> OverlaySettings:
    if not isinstance(net.settings, OverlaySettings):
        raise TypeError(f"network {net.name} has no overlay settings")
    return net.settings


def is_encrypted(net: Network) -> bool:
    """``--opt encrypted``: its VXLAN traffic between engines goes in IPsec ESP (overlay_encryption)."""
    return OPT_ENCRYPTED in net.options


def requested_vni(net: Network) -> int | None:
    """The VNI the user asked for with ``-o com.docker.network.driver.overlay.vxlanid_list=N``."""
    text = net.options.get(OPT_VNI, "")
    if not text:
        return None
    first = text.split(",")[0].strip()
    if not first.isdigit() or not 1 <= int(first) <= 0xFFFFFF:
        raise InvalidArgument(f"invalid {OPT_VNI} {text!r}: a VXLAN id is a number from 1 to 16777215")
    if "," in text:
        raise InvalidArgument(f"invalid {OPT_VNI} {text!r}: an IPv4 overlay network takes one VXLAN id")
    return int(first)


def resolve_underlay(ipr, advertise_host: str) -> Underlay:  # type: ignore[no-untyped-def]
    """``--cluster-advertise``'s host part, an interface name or one of this namespace's addresses."""
    addrs = address.ipv4_addresses(ipr)
    try:
        wanted = ip_address(advertise_host)
    except ValueError:
        index = link.index_of(ipr, advertise_host)
        if index is None:
            raise EngineError(f"--cluster-advertise: no interface {advertise_host} in this namespace") from None
        mine = [a for a in addrs if a.index == index]
        if not mine:
            raise EngineError(f"--cluster-advertise: interface {advertise_host} has no IPv4 address") from None
        found = mine[0]
    else:
        matching = [a for a in addrs if a.address.ip == wanted]
        if not matching:
            raise EngineError(f"--cluster-advertise: {advertise_host} is not an address of this host")
        found = matching[0]
    return Underlay(ip=found.address.ip, index=found.index, mtu=link.link_by_index(ipr, found.index).mtu)


class OverlayDriver(OnHostLinks):
    name = "overlay"

    def __init__(self, host: HostNetlink, advertise_host: str, sandboxes: Path) -> None:
        super().__init__(host)
        self._advertise_host = advertise_host
        self._underlay: Underlay | None = None
        self.sandboxes = sandboxes  # where the networks' namespaces are pinned
        self._esp_missing: list[str] | None = None  # what the kernel lacks for ESP, once probed

    def sandbox(self, net: Network) -> str:
        """The network's namespace (its pin's path)."""
        return str(self.sandboxes / net.id[:12])

    @property
    def underlay(self) -> Underlay:
        if self._underlay is None:
            self._underlay = resolve_underlay(self.host, self._advertise_host)
        return self._underlay

    @property
    def mtu(self) -> int:
        return self.underlay.mtu - VXLAN_OVERHEAD

    # -- network lifecycle -------------------------------------------------------------------
    def prepare(self, net: Network, others: list[Network]) -> None:
        """Check the options; the settings (the VNI) come from the cluster store's allocation."""
        unknown = sorted(set(net.options) - {OPT_VNI, OPT_ENCRYPTED})
        if unknown:
            raise InvalidArgument(f"unknown option {unknown[0]!r} for the overlay driver (it knows {OPT_VNI})")
        self.check_encryption(net, "create")
        requested_vni(net)

    def esp_missing(self) -> list[str]:
        """What the kernel lacks for IPsec ESP with libnetwork's AEAD ([]: nothing), probed once."""
        if self._esp_missing is None:
            self._esp_missing = xfrm.probe_esp(REQID)
        return self._esp_missing

    def check_encryption(self, net: Network, doing: str) -> None:
        """An encrypted network needs ESP in the kernel: refused as dockerd refuses a join on such a host."""
        if is_encrypted(net) and self.esp_missing():
            raise Forbidden(f"cannot {doing} secure network: required modules to install IPSEC rules are missing on "
                            f"host ({'; '.join(self.esp_missing())})")

    def mtu_of(self, net: Network) -> int:
        """Underlay − 50, and room for ESP on an encrypted network (1424 on a 1500 underlay, libnetwork's)."""
        return encrypted_mtu(self.mtu) if is_encrypted(net) else self.mtu

    def create_network(self, net: Network) -> None:
        settings = settings_of(net)
        underlay = self.underlay
        sandbox = netns.create(self.sandbox(net))
        try:
            with netns.iproute(sandbox) as ipr:
                bridge = link.ensure_bridge(ipr, BRIDGE, self.mtu_of(net))
                if link.index_of(ipr, VXLAN) is None:
                    fd = os.open(sandbox, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        tunnel.add_vxlan_into(self.host, VXLAN, settings.vni, underlay.ip, underlay.index, VXLAN_PORT,
                                              self.mtu_of(net), fd, proxy=True)
                    finally:
                        os.close(fd)
                vxlan = link.index_of(ipr, VXLAN)
                if vxlan is None:
                    raise EngineError(f"the VXLAN of network {net.name} vanished right after it was created")
                link.ensure_master(ipr, vxlan, bridge)
                link.ensure_up(ipr, vxlan)
        except NetlinkError as exc:
            with contextlib.suppress(Exception):
                self.delete_network(net)
            if exc.code == errno.EEXIST:
                raise EngineError(f"cannot create the VXLAN of network {net.name}: VNI {settings.vni} on port "
                                  f"{VXLAN_PORT} is taken by another device of this host") from None
            raise
        except Exception:
            with contextlib.suppress(Exception):
                self.delete_network(net)
            raise

    def delete_network(self, net: Network) -> None:
        self._remove_sandbox(self.sandbox(net))

    def _remove_sandbox(self, sandbox: str) -> None:
        # The vxlan goes first and now: the namespace itself dies later (when the kernel gets to it),
        # and until then its socket would hold the VNI against a network created again at once.
        if netns.exists(sandbox):
            with netns.iproute(sandbox) as ipr:
                link.delete_link(ipr, VXLAN)
        netns.remove(sandbox)

    def restore(self, net: Network) -> None:
        self.create_network(net)

    def orphans(self, nets: list[Network], links: list[link.LinkInfo]) -> list[str]:
        """Namespaces pinned as this driver pins them that no network owns (their paths)."""
        owned = {self.sandbox(n) for n in nets}
        if not self.sandboxes.is_dir():
            return []
        return [str(p) for p in self.sandboxes.iterdir() if SANDBOX_NAME.fullmatch(p.name) and str(p) not in owned]

    def remove_orphan(self, name: str) -> None:
        self._remove_sandbox(name)

    # -- remote endpoints ------------------------------------------------------------------------
    def sync_peers(self, net: Network, peers: list[Peer]) -> None:
        """The vxlan's forwarding entries and neighbours are exactly these peers'."""
        sandbox = self.sandbox(net)
        if not netns.exists(sandbox):
            return  # not programmed yet: create_network comes first, then the next sync
        with netns.iproute(sandbox) as ipr:
            index = link.index_of(ipr, VXLAN)
            if index is None:
                return
            wanted_fdb = {(p.mac, p.vtep) for p in peers}
            wanted_neigh = {p.ip: p.mac for p in peers}
            present_fdb = neighbour.fdb_entries(ipr, index)
            present_neigh = neighbour.permanent_neighbours(ipr, index)
            for mac, vtep in present_fdb - wanted_fdb:
                neighbour.remove_fdb(ipr, index, mac, vtep)
            for ip, mac in present_neigh.items():
                if wanted_neigh.get(ip) != mac:
                    neighbour.remove_neighbour(ipr, index, ip)
            for mac, vtep in wanted_fdb - present_fdb:
                neighbour.ensure_fdb(ipr, index, mac, vtep)
            for ip, mac in wanted_neigh.items():
                if present_neigh.get(ip) != mac:
                    neighbour.ensure_neighbour(ipr, index, ip, mac)

    # -- endpoints -------------------------------------------------------------------------------
    def join(self, net: Network, ep: Endpoint, sandbox: str) -> None:
        assert ep.address is not None
        with netns.iproute(self.sandbox(net)) as ipr:
            master = link.index_of(ipr, BRIDGE)
            if master is None:
                raise EngineError(f"the bridge of overlay network {net.name} is missing")
            fd = os.open(sandbox, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _, peer = link.add_veth_into(ipr, host_ifname(ep), ep.ifname, fd, self.mtu_of(net), ep.mac, master)
            finally:
                os.close(fd)
        # On failure the caller (NetworkService.wire_endpoint) unwires through leave().
        configure_endpoint_link(sandbox, ep, peer)

    def leave(self, net: Network, ep: Endpoint, sandbox: str | None = None) -> None:
        overlay = self.sandbox(net)
        if not netns.exists(overlay):
            return  # gone with its namespace
        with netns.iproute(overlay) as ipr:
            if sandbox and netns.exists(sandbox):
                link.retire_veth(ipr, host_ifname(ep), sandbox, ep.ifname)
            else:
                link.delete_link(ipr, host_ifname(ep))
