"""The files a container sees under /etc: hosts and resolv.conf as dockerd writes them, and its hostname.

Pure text in, text out: the caller reads the host's own files (``HostResolvConf.read``,
``read_host_hosts``) and says which addresses and networks the container has; nothing here touches a
namespace or a container. The runtime bind-mounts the results and rewrites them in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

# What every container's /etc/hosts starts with (dockerd's lines, IPv6 ones included).
LOCAL_HOSTS = ("127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet",
               "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters")
HOST_GATEWAY = "host-gateway"  # dockerd's name, in --add-host, for the host as containers reach it
EMBEDDED_DNS_OPTIONS = ("ndots:0",)  # dockerd's default options behind its embedded DNS


@dataclass(frozen=True)
class HostResolvConf:
    """What the daemon's own /etc/resolv.conf says that containers inherit."""

    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> HostResolvConf:
        words = [line.split() for line in text.splitlines()]
        servers = tuple(w[1] for w in words if len(w) >= 2 and w[0] == "nameserver")
        search = next((tuple(w[1:]) for w in words if w and w[0] == "search"), ())
        return cls(servers, search)

    @classmethod
    def read(cls, path: Path = Path("/etc/resolv.conf")) -> HostResolvConf:
        try:
            return cls.parse(path.read_text())
        except OSError:
            return cls()

    def nameservers_for_containers(self) -> list[str]:
        """A container's namespace cannot reach resolvers on the host's loopback (the embedded DNS,
        which asks from the daemon's namespace for those, can)."""
        return [s for s in self.nameservers if not s.startswith("127.")]


def read_host_hosts(path: Path = Path("/etc/hosts")) -> str | None:
    """The daemon's own /etc/hosts, which a --network host container sees; None when unreadable."""
    try:
        return path.read_text()
    except OSError:
        return None


def container_hostname(configured: str, container_id: str) -> str:
    """The hostname of a container in a namespace of its own: --hostname, else its short id."""
    return configured or container_id[:12]


def extra_hosts(entries: list[str], host_gateway: IPv4Address | None) -> list[str]:
    """--add-host NAME:ADDR entries as hosts lines; ``host-gateway`` stands for ``host_gateway``."""
    out = []
    for entry in entries:
        name, _, addr = entry.partition(":")
        if addr == HOST_GATEWAY and host_gateway is not None:
            addr = str(host_gateway)
        out.append(f"{addr}\t{name}")
    return out


def hosts_file(hostname: str, domainname: str, addresses: list[IPv4Address], extra: list[str]) -> str:
    """/etc/hosts of a container with a namespace of its own: the local names, --add-host lines, then
    one line per network the container is on (dockerd rewrites it on connect and disconnect)."""
    names = f"{hostname}.{domainname} {hostname}" if domainname else hostname
    lines = [*LOCAL_HOSTS, *extra, *(f"{addr}\t{names}" for addr in addresses)]
    return "\n".join(lines) + "\n"


def host_network_hosts_file(host_hosts: str, extra: list[str]) -> str:
    """/etc/hosts of a --network host container: the host's own file, then its --add-host lines."""
    separator = "" if host_hosts.endswith("\n") or not host_hosts else "\n"
    return host_hosts + separator + "".join(f"{line}\n" for line in extra)


def resolv_conf(dns: list[str], search: list[str], options: list[str], embedded_dns: str | None,
                host: HostResolvConf) -> str:
    """/etc/resolv.conf from --dns, --dns-search and --dns-option. With ``embedded_dns`` (its
    address, on user-defined networks) that is the only nameserver and --dns goes to its upstreams;
    otherwise --dns, else the host's resolvers a container can reach. Search domains are the host's
    unless given."""
    if embedded_dns is not None:
        servers = [embedded_dns]
        options = options or list(EMBEDDED_DNS_OPTIONS)
    else:
        servers = dns or host.nameservers_for_containers()
    search = search or list(host.search)
    out = [f"nameserver {s}" for s in servers]
    if search:
        out.append("search " + " ".join(search))
    if options:
        out.append("options " + " ".join(options))
    return "\n".join(out) + "\n"
