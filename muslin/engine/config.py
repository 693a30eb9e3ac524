"""The daemon's configuration: dockerd's flags that muslind honours, already validated."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path

from .cluster_store import ClusterConfig


TRUE_WORDS = ("1", "t", "true", "yes")
FALSE_WORDS = ("0", "f", "false", "no")


def parse_bool(text: str) -> bool:
    """dockerd's booleans (flags and driver options); ValueError for anything else."""
    lowered = text.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ValueError(f"invalid boolean value {text!r}: expected true or false")


@dataclass
class DaemonConfig:
    data_root: Path
    exec_root: Path
    bridge_name: str = "muslin0"
    bip: IPv4Interface | None = None  # None: 172.17.0.1/16
    mtu: int = 1500
    ip_masq: bool = True
    iptables: bool = True
    firewall_backend: str = ""  # dockerd 29's --firewall-backend; "": nftables where it works, else iptables
    ip_forward: bool = True
    icc: bool = True
    default_bind_ip: str = "0.0.0.0"
    cluster: ClusterConfig | None = None  # --cluster-store and friends: global (overlay) networks

    @property
    def sandbox_root(self) -> Path:
        """Where containers' network namespaces are pinned, one nsfs mount each."""
        return self.exec_root / "netns"

    @property
    def default_bip(self) -> IPv4Interface:
        return self.bip or IPv4Interface("172.17.0.1/16")
