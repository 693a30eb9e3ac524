"""The macvlan driver: containers as hosts of their own on the parent interface's L2 segment.

Each endpoint is a macvlan of the parent, born inside the container's namespace, with its own MAC (02:42
+ the IP, as on bridges). There is no NAT, no bridge and no iptables: traffic leaves on the parent as it
is, which is how the article's §5.2.1 reaches containers on other hosts. As with any macvlan, the host
itself cannot reach its own containers through the parent (the kernel does not loop macvlan traffic
back to the lower device).

``-o parent`` names the interface. ``name.N`` that does not exist is created as VLAN N of ``name`` and
removed with the network. No parent: a dummy link ``dm-<id>`` of our own, so the containers of the
network reach each other and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re

from pyroute2.netlink.exceptions import NetlinkError

from muslin.errors import Conflict, EngineError, InvalidArgument
from muslin.kernel import link, netns

from ..model import Endpoint, Network
from ..settings import MacvlanMode, MacvlanSettings, ParentOrigin, Vlan
from .base import OnHostLinks, configure_endpoint_link

log = logging.getLogger(__name__)

OPT_PARENT = "parent"
OPT_MODE = "macvlan_mode"
VLAN_NAME = re.compile(r"(?P<base>[^.]+)\.(?P<vid>[0-9]{1,4})")
DUMMY_PREFIX = "dm-"
DUMMY_PEER_PREFIX = "dmp-"
OWN_PARENT = re.compile(r"dmp?-[0-9a-f]{11,12}")  # parents muslind makes up (reconcile removes orphans)


class ParentMissing(EngineError):
    """The user's parent interface is gone: the network stays, and its containers cannot start until
    the interface is back (a restart of muslind must not fail over it)."""


def dummy_name(net: Network) -> str:
    return DUMMY_PREFIX + net.id[:12]


def dummy_peer_name(net: Network) -> str:
    """The other end, when the dummy parent had to be one end of a veth pair."""
    return DUMMY_PEER_PREFIX + net.id[:11]


def settings_of(net: Network) -> MacvlanSettings:
    if not isinstance(net.settings, MacvlanSettings):
        raise TypeError(f"network {net.name} has no macvlan settings")
    return net.settings


class MacvlanDriver(OnHostLinks):
    name = "macvlan"

    # -- network lifecycle -------------------------------------------------------------------
    def prepare(self, net: Network, others: list[Network]) -> None:
        opts = net.options
        unknown = sorted(set(opts) - {OPT_PARENT, OPT_MODE})
        if unknown:
            raise InvalidArgument(f"unknown option {unknown[0]!r} for the macvlan driver "
                                  f"(it knows {OPT_PARENT}, {OPT_MODE})")
        try:
            mode = MacvlanMode(opts.get(OPT_MODE) or MacvlanMode.BRIDGE)
        except ValueError:
            raise InvalidArgument(f"requested macvlan mode '{opts[OPT_MODE]}' is not valid, "
                                  "'bridge' mode is the macvlan driver default") from None
        parent = opts.get(OPT_PARENT, "")
        if not parent:
            net.settings = MacvlanSettings(parent=dummy_name(net), mode=mode, origin=ParentOrigin.DUMMY)
            return
        for other in others:
            if isinstance(other.settings, MacvlanSettings) and other.settings.parent == parent:
                raise Conflict(f"network {DUMMY_PREFIX}{other.id[:12]} is already using parent interface {parent}")
        found = link.find_link(self.host, parent)
        if found is not None and found.loopback:
            raise InvalidArgument(f"loopback interface is not a valid macvlan parent link: {parent}")
        if found is not None:
            net.settings = MacvlanSettings(parent=parent, mode=mode, origin=ParentOrigin.USER)
            return
        vlan = VLAN_NAME.fullmatch(parent)
        if vlan is None or len(parent) > 15:
            raise InvalidArgument(f"invalid subinterface vlan name {parent}, example formatting is eth0.10")
        if not 1 <= int(vlan["vid"]) <= 4094:
            raise InvalidArgument(f"vlan id out of range: {vlan['vid']} (1-4094) in parent {parent}")
        if link.index_of(self.host, vlan["base"]) is None:
            raise InvalidArgument(f"-o parent interface was not found on the host: {vlan['base']}")
        net.settings = MacvlanSettings(parent=parent, mode=mode, origin=ParentOrigin.VLAN,
                                       vlan=Vlan(base=vlan["base"], vid=int(vlan["vid"])))

    def create_network(self, net: Network) -> None:
        settings = settings_of(net)
        parent, origin = settings.parent, settings.origin
        existing = link.find_link(self.host, parent)
        try:
            if origin is ParentOrigin.VLAN:
                vlan = settings.vlan
                assert vlan is not None
                base = link.index_of(self.host, vlan.base)
                if base is None:
                    raise ParentMissing(f"-o parent interface was not found on the host: {vlan.base}")
                try:
                    link.ensure_vlan(self.host, parent, base, vlan.vid)
                except NetlinkError as exc:
                    raise EngineError(f"failed to create {parent} vlan link: {os.strerror(exc.code).lower()}") from None
            elif origin is ParentOrigin.DUMMY:
                # A kernel without dummy links gets one end of a veth pair whose other end stays up
                # unused: the same thing for macvlans, a lower device that goes nowhere.
                peer = dummy_peer_name(net)
                if existing is not None and existing.kind == "veth":
                    link.ensure_veth_pair(self.host, parent, peer)  # made so by an earlier start
                else:
                    try:
                        link.ensure_dummy(self.host, parent)
                    except NetlinkError as exc:
                        if exc.code != errno.EOPNOTSUPP:
                            raise
                        link.ensure_veth_pair(self.host, parent, peer)
            elif existing is None:
                raise ParentMissing(f"-o parent interface was not found on the host: {parent}")
        except FileExistsError as exc:  # a link of another kind holds the name: not ours to touch
            raise EngineError(f"cannot use {parent} as the parent of network {net.name}: {exc}") from None
        except Exception:
            if origin is not ParentOrigin.USER and existing is None:  # undo only what this call made
                with contextlib.suppress(Exception):
                    link.retire_link(self.host, parent)
            raise

    def delete_network(self, net: Network) -> None:
        settings = settings_of(net)
        if settings.origin is not ParentOrigin.USER:
            link.retire_link(self.host, settings.parent)

    def restore(self, net: Network) -> None:
        """A network whose parent interface is gone is logged, not fatal: the interface is the user's
        to bring back (its containers cannot start until then)."""
        try:
            self.create_network(net)
        except ParentMissing as exc:
            log.error("network %s cannot be used until its parent is back: %s", net.name, exc.message)

    def orphans(self, nets: list[Network], links: list[link.LinkInfo]) -> list[str]:
        """Parents named as muslind names them that no network made; a VLAN parent has a name the user
        chose, and is never taken for an orphan: it may not be ours."""
        owned = set()
        for net in nets:
            settings = settings_of(net)
            if settings.origin is ParentOrigin.DUMMY:
                owned |= {settings.parent, dummy_peer_name(net)}
        return [found.name for found in links
                if OWN_PARENT.fullmatch(found.name) and found.name not in owned]

    def remove_orphan(self, name: str) -> None:
        link.retire_link(self.host, name)

    # -- endpoints -------------------------------------------------------------------------------
    def join(self, net: Network, ep: Endpoint, sandbox: str) -> None:
        assert ep.address is not None
        settings = settings_of(net)
        parent = link.index_of(self.host, settings.parent)
        if parent is None:
            raise EngineError(f"parent interface {settings.parent} of network {net.name} is missing")
        fd = os.open(sandbox, os.O_RDONLY | os.O_CLOEXEC)
        try:
            link.add_macvlan_into(self.host, ep.ifname, parent, fd, settings.mode, ep.mac)
        finally:
            os.close(fd)
        # On failure the caller (NetworkService.wire_endpoint) unwires through leave().
        configure_endpoint_link(sandbox, ep)

    def leave(self, net: Network, ep: Endpoint, sandbox: str | None = None) -> None:
        # The macvlan lives in the sandbox only: a sandbox that is gone took it along.
        if sandbox and netns.exists(sandbox):
            with netns.iproute(sandbox) as ipr:
                link.delete_link(ipr, ep.ifname)
