"""Datapaths behind one Backend interface; ``make_backend`` picks one by the config's Backend.Type."""

from __future__ import annotations

from pyroute2 import IPRoute

from muslin.fabric.backends.base import Backend, ExternalInterface
from muslin.fabric.config import NetworkConfig


def make_backend(config: NetworkConfig, ext: ExternalInterface, ipr: IPRoute) -> Backend:
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
    raise ValueError(f"no backend {config.backend.type!r}")
