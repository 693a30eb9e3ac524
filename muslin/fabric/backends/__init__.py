"""Datapaths behind one Backend interface; ``make_backend`` picks one by the config's Backend.Type."""

from __future__ import annotations

from pyroute2 import IPRoute

from muslin.fabric.backends.base import Backend, ExternalInterface
from muslin.fabric.config import NetworkConfig


def make_backend(config: NetworkConfig, ext: ExternalInterface, ipr: IPRoute, state_dir: str) -> Backend:
    """state_dir: where a backend keeps files of its own (bgp: BIRD's config, socket and pid file)."""
    # Imported here so that a node that never runs udp never loads the forwarder.
    if config.backend.type == "vxlan":
        from muslin.fabric.backends.vxlan import VxlanBackend
        return VxlanBackend(config, ext, ipr)
    if config.backend.type == "host-gw":
        from muslin.fabric.backends.hostgw import HostGwBackend
        return HostGwBackend(config, ext, ipr)
    if config.backend.type == "udp":
        from muslin.fabric.backends.udp import UdpBackend
        return UdpBackend(config, ext, ipr)
    if config.backend.type == "bgp":
        from muslin.fabric.backends.bgp import BgpBackend
        return BgpBackend(config, ext, ipr, state_dir)
    raise ValueError(f"no backend {config.backend.type!r}")
