"""muslind is IPv4-only: its bridges and the host ends of its veths carry no IPv6 (no link-local
address, no route), since every IPv6 route in the engine's namespace makes later link changes slower
(see muslin/kernel/link.py). The namespace's own defaults stay as they were."""

from __future__ import annotations

from .conftest import Daemon


def _sysctl(daemon: Daemon, key: str) -> str:
    return daemon.sh("cat", f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6").strip()


def test_bridges_and_host_veth_ends_have_no_ipv6(daemon: Daemon) -> None:
    default_before = _sysctl(daemon, "default")
    daemon.docker("network", "create", "--subnet", "10.77.0.0/24", "v4only")
    daemon.docker("run", "-d", "--name", "on-default", "busybox", "sleep", "60")
    daemon.docker("run", "-d", "--name", "on-user", "--network", "v4only", "busybox", "sleep", "60")
    net_id = daemon.docker("network", "inspect", "-f", "{{.Id}}", "v4only").stdout.strip()
    links = ["muslin0", f"br-{net_id[:12]}"]
    for name, network in (("on-default", "bridge"), ("on-user", "v4only")):
        endpoint = daemon.docker("inspect", "-f", f"{{{{.NetworkSettings.Networks.{network}.EndpointID}}}}",
                                 name).stdout.strip()
        links.append("veth" + endpoint[:7])
    for link in links:
        assert _sysctl(daemon, link) == "1", link
        assert daemon.sh("ip", "-6", "addr", "show", "dev", link).strip() == "", link
        assert daemon.sh("ip", "-6", "route", "show", "table", "all", "dev", link).strip() == "", link
    assert _sysctl(daemon, "default") == default_before  # not the namespace's setting: only our links
    # IPv4 goes on as before: each container reaches its gateway and the other network's container is
    # reached through the host.
    for name, gateway in (("on-default", "172.17.0.1"), ("on-user", "10.77.0.1")):
        out = daemon.docker("exec", name, "ping", "-c", "1", "-W", "2", gateway).stdout
        assert "1 packets received" in out
