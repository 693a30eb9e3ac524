"""The bridge driver's options (``-o com.docker.network.bridge.*``), read together with the daemon's
flags into the settings the driver programs. Pure: the checks against other networks and the host's
links are the driver's."""

from __future__ import annotations

import re

from ipaddress import IPv4Address

from muslin.errors import InvalidArgument

from ..config import DaemonConfig, parse_bool
from ..model import Network
from ..settings import BridgeSettings

OPT_NAME = "com.docker.network.bridge.name"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_BIND = "com.docker.network.bridge.host_binding_ipv4"
OPT_DEFAULT = "com.docker.network.bridge.default_bridge"
OPT_MTU = "com.docker.network.driver.mtu"
KNOWN_OPTIONS = {OPT_NAME, OPT_ICC, OPT_MASQ, OPT_BIND, OPT_DEFAULT, OPT_MTU}


def _bool(options: dict[str, str], key: str, default: bool) -> bool:
    if key not in options:
        return default
    try:
        return parse_bool(options[key])
    except ValueError:
        raise InvalidArgument(f"invalid value {options[key]!r} for option {key}: expected true or false") from None


# Narrower than the kernel's rule (any byte but '/', ':' and spaces): the name is written into
# iptables-restore and nft scripts, where a quote or a '#' would end or comment out the rule.
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def _check_ifname(name: str) -> None:
    if not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise InvalidArgument(f"invalid bridge name {name!r}: a bridge name has 1 to 15 characters "
                              "among letters, digits, '_', '.' and '-'")


def bridge_settings(net: Network, config: DaemonConfig) -> BridgeSettings:
    """The settings of ``net`` from its options, falling back to the daemon's flags; InvalidArgument on bad input."""
    opts = net.options
    for key in opts:
        if key.startswith("com.docker.network.") and key not in KNOWN_OPTIONS:
            raise InvalidArgument(f"unknown option {key!r} for the bridge driver")
    if not net.predefined and OPT_DEFAULT in opts:
        raise InvalidArgument(f"option {OPT_DEFAULT} is reserved for the default bridge network")
    bridge = opts.get(OPT_NAME) or (config.bridge_name if net.predefined else f"br-{net.id[:12]}")
    _check_ifname(bridge)
    mtu_text = opts.get(OPT_MTU, str(config.mtu))
    try:
        mtu = int(mtu_text)
    except ValueError:
        raise InvalidArgument(f"invalid value {mtu_text!r} for option {OPT_MTU}: not a number") from None
    if not 68 <= mtu <= 65535:
        raise InvalidArgument(f"invalid MTU {mtu}: it must be between 68 and 65535")
    # --icc is dockerd's switch for the default bridge; user networks default to true.
    icc = _bool(opts, OPT_ICC, config.icc if net.predefined else True)
    masquerade = _bool(opts, OPT_MASQ, config.ip_masq)
    bind = opts.get(OPT_BIND, config.default_bind_ip)
    try:
        host_binding = IPv4Address(bind)
    except ValueError:
        raise InvalidArgument(f"invalid value {bind!r} for option {OPT_BIND}: not an IPv4 address") from None
    if net.pool is None or net.pool.gateway is None:
        raise InvalidArgument("a bridge network needs a subnet and a gateway")
    return BridgeSettings(bridge_name=bridge, mtu=mtu, icc=icc, masquerade=masquerade, host_binding=host_binding)
