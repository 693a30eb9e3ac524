"""The article's §2 and §4 with containers, through the real docker CLI, checked against the kernel."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import struct
import subprocess
import threading
import time

import docker as docker_sdk
import pytest

from muslin.kernel import netns

from ..firewall_view import Forward

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


HTTPD = "mkdir -p /www && echo hello world > /www/index.html && exec httpd -f -p 80 -h /www"


def _link_outside(daemon, make_netns) -> str:
    """An 'outside world' namespace routed to the daemon's host: daemon 10.99.0.1, outside 10.99.0.2."""
    outside = make_netns("mo-")
    host_if, out_if = "vo" + outside[-6:], "vi" + outside[-6:]
    daemon.sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", out_if, "netns", netns.path_for(outside))
    daemon.sh("ip", "addr", "add", "10.99.0.1/24", "dev", host_if)
    daemon.sh("ip", "link", "set", host_if, "up")
    for cmd in (["ip", "addr", "add", "10.99.0.2/24", "dev", out_if], ["ip", "link", "set", out_if, "up"]):
        subprocess.run(["nsenter", f"--net={netns.path_for(outside)}", *cmd], check=True)
    return outside


def _serve_peer_address(ns: str, port: int) -> tuple[threading.Thread, list[str]]:
    """A one-shot TCP server inside ``ns`` that answers with the address it saw the client come from."""
    seen: list[str] = []
    with netns.entered(ns):
        srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(1)
    srv.settimeout(20)

    def run() -> None:
        try:
            conn, addr = srv.accept()
            seen.append(addr[0])
            conn.recv(1024)
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + addr[0].encode())
            conn.close()
        finally:
            srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, seen


def _wget(daemon, url: str) -> str:
    return daemon.sh("timeout", "5", "busybox", "wget", "-qO-", url, check=False)


def test_published_port_dnat_hairpin_localhost_and_egress(each_backend_daemon, make_netns) -> None:
    daemon = each_backend_daemon
    outside = _link_outside(daemon, make_netns)
    daemon.docker("run", "-d", "--name", "web1", "-p", "8081:80", "busybox", "sh", "-c", HTTPD)
    firewall = daemon.firewall
    assert firewall.forwards() == [Forward("tcp", 8081, "172.17.0.2:80")]
    assert firewall.hairpins() == {("172.17.0.2", "tcp", 80)}
    deadline = time.monotonic() + 10
    while "hello world" not in _wget(daemon, "http://127.0.0.1:8081/") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "hello world" in _wget(daemon, "http://127.0.0.1:8081/")  # the host itself, on loopback
    assert "hello world" in _wget(daemon, "http://10.99.0.1:8081/")  # the host's own address
    from_outside = subprocess.run(["nsenter", f"--net={netns.path_for(outside)}", "timeout", "5", "busybox",
                                   "wget", "-qO-", "http://10.99.0.1:8081/"], capture_output=True, text=True)
    assert "hello world" in from_outside.stdout  # another host
    hairpin = daemon.docker("exec", "web1", "timeout", "5", "wget", "-qO-", "http://10.99.0.1:8081/")
    assert "hello world" in hairpin.stdout  # the container through its own published port
    assert "0.0.0.0:8081->80/tcp" in daemon.docker("ps").stdout
    assert daemon.docker("port", "web1").stdout.strip() == "80/tcp -> 0.0.0.0:8081"

    # Egress: the outside world sees the host's address, not the container's.
    server, seen = _serve_peer_address(outside, 9000)
    out = daemon.docker("run", "--rm", "busybox", "timeout", "5", "wget", "-qO-", "http://10.99.0.2:9000/")
    server.join(10)
    assert seen == ["10.99.0.1"] and "10.99.0.1" in out.stdout

    # A clash is refused with Docker's message, and the refused container holds nothing.
    clash = daemon.docker("run", "-d", "--name", "web1b", "-p", "8081:80", "busybox", "sleep", "30", check=False)
    assert clash.returncode != 0 and "port is already allocated" in clash.stderr
    assert "172.17.0.3" not in daemon.firewall.listing()
    daemon.docker("rm", "web1b")

    (doc,) = json.loads(daemon.docker("inspect", "web1").stdout)
    assert doc["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8081"}]}
    assert doc["NetworkSettings"]["IPAddress"] == "172.17.0.2"
    assert doc["NetworkSettings"]["MacAddress"] == "02:42:ac:11:00:02"
    daemon.docker("rm", "-f", "web1")
    listing = daemon.firewall.listing()
    assert "172.17.0.2" not in listing and "8081" not in listing
    assert daemon.firewall.forwards() == [] and daemon.firewall.hairpins() == set()
    assert "veth" not in daemon.sh("ip", "link")
    assert daemon.docker("ps", "-aq").stdout.strip() == ""


def test_a_host_forward_chain_ending_in_reject_does_not_shadow_new_networks(iptables_daemon, make_netns) -> None:
    """The host's own FORWARD rules (here a catch-all REJECT, added after muslind started) come after
    the jumps into MUSLIN-USER and MUSLIN-FORWARD, so networks created later still forward. (iptables
    only: with nftables, as with Docker's, a REJECT or DROP in iptables' FORWARD still drops.)"""
    daemon = iptables_daemon
    outside = _link_outside(daemon, make_netns)
    daemon.sh("iptables", "-A", "FORWARD", "-j", "REJECT")
    daemon.docker("network", "create", "--subnet", "10.78.0.0/24", "late")
    forward = [r for r in daemon.sh("iptables", "-S", "FORWARD").splitlines() if r.startswith("-A")]
    assert forward == ["-A FORWARD -j MUSLIN-USER", "-A FORWARD -j MUSLIN-FORWARD",
                       "-A FORWARD -j REJECT --reject-with icmp-port-unreachable"]
    server, seen = _serve_peer_address(outside, 9001)
    out = daemon.docker("run", "--rm", "--network", "late", "busybox",
                        "timeout", "5", "wget", "-qO-", "http://10.99.0.2:9001/", check=False)
    server.join(10)
    assert seen == ["10.99.0.1"], out.stderr
    daemon.docker("network", "rm", "late")
    assert "10.78.0" not in daemon.sh("iptables-save")


def test_rules_wiped_by_a_firewall_reload_come_back(each_backend_daemon) -> None:
    """A reload that replaces the whole ruleset (as firewalld or iptables-restore of a saved file do,
    or ``nft flush ruleset``) takes every network's and port's rules away; muslind notices and puts
    them back, exactly as they were (in order, for iptables)."""
    daemon = each_backend_daemon
    firewall = daemon.firewall
    daemon.docker("network", "create", "--subnet", "10.79.0.0/24", "reloaded")
    daemon.docker("run", "-d", "--name", "web3", "--network", "reloaded", "-p", "8083:80", "busybox", "sh", "-c", HTTPD)
    wanted = firewall.snapshot()
    assert Forward("tcp", 8083, "10.79.0.2:80") in firewall.forwards()
    firewall.wipe()
    # No look at the wiped state here: the guard may have put everything back before a look could run.
    # Its log line below says it found the rules gone.
    deadline = time.monotonic() + 10
    while firewall.snapshot() != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert firewall.snapshot() == wanted
    assert "put back" in daemon.log() and "firewall rules" in daemon.log()
    deadline = time.monotonic() + 10
    while "hello world" not in _wget(daemon, "http://127.0.0.1:8083/") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "hello world" in _wget(daemon, "http://127.0.0.1:8083/")
    daemon.docker("rm", "-f", "web3")
    daemon.docker("network", "rm", "reloaded")
    assert "10.79.0" not in firewall.listing()


def test_network_modes_of_the_article(daemon) -> None:
    daemon.docker("network", "create", "-d", "bridge", "--subnet", "192.168.100.0/24", "--gateway",
                  "192.168.100.1", "-o", "com.docker.network.bridge.name=docker1", "mybr0")
    out = daemon.docker("run", "--rm", "--network", "mybr0", "busybox", "ifconfig").stdout
    assert "inet addr:192.168.100.2" in out and "HWaddr 02:42:C0:A8:64:02" in out and "\nlo " in out
    assert "inet6" not in out.split("\nlo ")[0]  # an IPv4-only network gives eth0 no IPv6, as Docker 26+
    host = daemon.docker("run", "--rm", "--network", "host", "busybox", "ifconfig").stdout
    assert "muslin0" in host and "docker1" in host
    none = daemon.docker("run", "--rm", "--network", "none", "busybox", "ifconfig").stdout
    assert none.startswith("lo ") and "eth0" not in none

    daemon.docker("run", "-d", "--name", "c1", "busybox", "sleep", "300")
    c1_if = daemon.docker("exec", "c1", "ifconfig", "eth0").stdout
    daemon.docker("run", "-d", "--name", "c2", "--network", "container:c1", "busybox", "sh", "-c",
                  "mkdir -p /www /tmp/c2only && echo hello world > /www/index.html && exec httpd -f -p 80 -h /www")
    assert daemon.docker("exec", "c2", "ifconfig", "eth0").stdout.split("RX")[0] == c1_if.split("RX")[0]
    deadline = time.monotonic() + 10
    answer = ""
    while "hello world" not in answer and time.monotonic() < deadline:
        answer = daemon.docker("exec", "c1", "wget", "-O", "-", "-q", "127.0.0.1", check=False).stdout
    assert "hello world" in answer
    assert "c2only" not in daemon.docker("exec", "c1", "ls", "/tmp").stdout
    assert daemon.docker("exec", "c2", "cat", "/etc/hosts").stdout == daemon.docker("exec", "c1", "cat", "/etc/hosts").stdout

    daemon.docker("network", "connect", "mybr0", "c1")
    assert "192.168.100." in daemon.docker("exec", "c1", "ifconfig", "eth1").stdout
    (net,) = json.loads(daemon.docker("network", "inspect", "mybr0").stdout)
    assert [c["Name"] for c in net["Containers"].values()] == ["c1"]
    assert daemon.docker("network", "rm", "mybr0", check=False).returncode != 0  # active endpoints
    daemon.docker("network", "disconnect", "mybr0", "c1")
    assert daemon.docker("exec", "c1", "ifconfig", "eth1", check=False).returncode != 0
    daemon.docker("rm", "-f", "c2", "c1")
    daemon.docker("network", "rm", "mybr0")
    assert "veth" not in daemon.sh("ip", "link")


def test_isolation_between_networks_internal_and_icc(each_backend_daemon) -> None:
    daemon = each_backend_daemon
    daemon.docker("network", "create", "--subnet", "10.61.0.0/24", "neta")
    daemon.docker("network", "create", "--subnet", "10.62.0.0/24", "netb")
    daemon.docker("network", "create", "--internal", "--subnet", "10.63.0.0/24", "inner")
    daemon.docker("network", "create", "--subnet", "10.64.0.0/24", "-o", "com.docker.network.bridge.enable_icc=false", "noicc")
    daemon.docker("run", "-d", "--name", "ca", "--network", "neta", "busybox", "sleep", "300")
    daemon.docker("run", "-d", "--name", "cb", "--network", "netb", "busybox", "sleep", "300")
    daemon.docker("run", "-d", "--name", "n1", "--network", "noicc", "busybox", "sleep", "300")
    daemon.docker("run", "-d", "--name", "n2", "--network", "noicc", "busybox", "sleep", "300")

    def ping(container: str, ip: str) -> int:
        return daemon.docker("exec", container, "ping", "-c", "1", "-W", "1", ip, check=False).returncode

    assert ping("ca", "10.61.0.1") == 0  # its own gateway
    assert ping("ca", "10.62.0.2") != 0  # another network
    assert ping("n1", "10.64.0.3") != 0  # ICC off
    internal = daemon.docker("run", "--rm", "--network", "inner", "busybox", "ping", "-c", "1", "-W", "1",
                             "10.61.0.2", check=False)
    assert internal.returncode != 0


def test_interactive_tty_session_through_a_pty(daemon) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(["docker", "run", "-it", "--rm", "busybox"], stdin=slave, stdout=slave,
                            stderr=slave, env=daemon.env, close_fds=True)
    os.close(slave)
    buf = b""

    def read_until(token: bytes, timeout: float = 10) -> None:
        nonlocal buf
        deadline = time.monotonic() + timeout
        while token not in buf and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    buf += os.read(master, 4096)
                except OSError:
                    break

    try:
        read_until(b"# ")
        os.write(master, b"ifconfig eth0; echo DONE$((1+1))\r")
        read_until(b"DONE2")
        assert b"inet addr:172.17.0." in buf
        os.write(master, b"exit 7\r")
        assert proc.wait(15) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert daemon.docker("ps", "-aq").stdout.strip() == ""


def test_stdin_pipe_logs_and_exit_codes(daemon) -> None:
    out = daemon.docker("run", "-i", "--rm", "busybox", "sh", input="echo hello\nexit 4\n", check=False)
    assert out.stdout == "hello\n" and out.returncode == 4
    daemon.docker("run", "-d", "--name", "talker", "busybox", "sh", "-c", "echo out; echo err >&2; sleep 300")
    deadline = time.monotonic() + 5
    while "out" not in daemon.docker("logs", "talker").stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    logs = daemon.docker("logs", "talker")
    assert logs.stdout == "out\n" and logs.stderr == "err\n"
    daemon.docker("stop", "-t", "1", "talker")
    (doc,) = json.loads(daemon.docker("inspect", "talker").stdout)
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 137
    missing = daemon.docker("run", "--rm", "nosuchimage", check=False)
    assert missing.returncode != 0 and "Unable to find image" in missing.stderr and "no registry" in missing.stderr


def test_sdk_runs_containers(daemon) -> None:
    client = docker_sdk.DockerClient(base_url=f"unix://{daemon.sock}")
    try:
        assert client.containers.run("busybox", ["echo", "hi"], remove=True) == b"hi\n"
        ct = client.containers.run("busybox", ["sleep", "300"], detach=True, name="sdkct", ports={"80/tcp": 8085})
        ct.reload()
        assert ct.ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8085"}]}
        code, output = ct.exec_run(["sh", "-c", "echo from-exec; exit 3"])
        assert (code, output) == (3, b"from-exec\n")
        assert [c.name for c in client.networks.get("bridge").containers] == ["sdkct"]
        ct.remove(force=True)
    finally:
        client.close()


def test_containers_survive_a_muslind_restart(daemon) -> None:
    daemon.docker("run", "-d", "--name", "keeper", "-p", "8090:80", "busybox", "sh", "-c", HTTPD)
    (before,) = json.loads(daemon.docker("inspect", "keeper").stdout)
    daemon.stop()
    assert os.path.exists(f"/proc/{before['State']['Pid']}")  # still running without the engine
    daemon.start()
    (after,) = json.loads(daemon.docker("inspect", "keeper").stdout)
    assert after["State"]["Running"] and after["State"]["Pid"] == before["State"]["Pid"]
    assert after["NetworkSettings"]["IPAddress"] == before["NetworkSettings"]["IPAddress"]
    deadline = time.monotonic() + 10
    while "hello world" not in _wget(daemon, "http://127.0.0.1:8090/") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "hello world" in _wget(daemon, "http://127.0.0.1:8090/")
    daemon.docker("rm", "-f", "keeper")
    assert "8090" not in daemon.firewall.listing()


def _sandbox_nat(container: dict) -> list[str]:
    saved = subprocess.run(["nsenter", f"--net={container['NetworkSettings']['SandboxKey']}", "iptables-save",
                            "-t", "nat"], capture_output=True, text=True, check=True).stdout
    return [line for line in saved.splitlines() if line.startswith("-A")]


def _ask_over_tcp(sandbox: str, name: str) -> list[str]:
    """An A query to 127.0.0.11:53 over TCP from inside the namespace; the addresses it answers."""
    query = struct.pack(">HHHHHH", 0x4D55, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)
    with netns.entered(sandbox):
        sock = socket.create_connection(("127.0.0.11", 53), timeout=5)
    with sock:
        sock.sendall(struct.pack(">H", len(query)) + query)
        (size,) = struct.unpack(">H", sock.recv(2, socket.MSG_WAITALL))
        answer = sock.recv(size, socket.MSG_WAITALL)
    ident, _, _, ancount, _, _ = struct.unpack_from(">HHHHHH", answer)
    assert ident == 0x4D55
    records = answer[len(query):]  # the header and question come back as sent, then the records
    out = []
    for _ in range(ancount):  # each: name pointer (2), type, class, ttl, rdlength, rdata
        rdlength = struct.unpack_from(">H", records, 10)[0]
        out.append(".".join(str(b) for b in records[12:12 + rdlength]))
        records = records[12 + rdlength:]
    return out


def test_embedded_dns_answers_names_and_aliases_on_user_networks(daemon) -> None:
    daemon.docker("network", "create", "--subnet", "10.81.0.0/24", "app")
    daemon.docker("network", "create", "--subnet", "10.82.0.0/24", "other")
    daemon.docker("run", "-d", "--name", "db1", "--network", "app", "--network-alias", "database",
                  "busybox", "sleep", "300")
    daemon.docker("run", "-d", "--name", "elsewhere", "--network", "other", "busybox", "sleep", "300")
    resolv = daemon.docker("run", "--rm", "--network", "app", "busybox", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 127.0.0.11" in resolv
    for name in ("db1", "database"):
        out = daemon.docker("run", "--rm", "--network", "app", "busybox", "nslookup", name).stdout
        assert "10.81.0.2" in out, out
    assert daemon.docker("run", "--rm", "--network", "app", "busybox", "ping", "-c", "1", "-W", "2",
                         "database").returncode == 0
    # Over TCP too (what a client does after a truncated UDP answer), from inside db1's namespace.
    (db1,) = json.loads(daemon.docker("inspect", "db1").stdout)
    assert _ask_over_tcp(db1["NetworkSettings"]["SandboxKey"], "database") == ["10.81.0.2"]
    # Port 53 stays the container's own: a DNS server in it can bind the wildcard address, as with
    # dockerd, while 127.0.0.11:53 keeps answering.
    with netns.entered(db1["NetworkSettings"]["SandboxKey"]):
        servers = [socket.socket(socket.AF_INET, kind) for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)]
    for server in servers:
        with server:
            server.bind(("0.0.0.0", 53))
    assert "10.81.0.2" in daemon.docker("exec", "db1", "nslookup", "database").stdout
    # A restart of the container or of muslind keeps the redirect's ports (conntrack pins a resolver
    # that keeps its source port to the port it saw first), and never doubles the jump.
    nat_before = _sandbox_nat(db1)
    daemon.docker("restart", "-t", "0", "db1")
    assert "10.81.0.2" in daemon.docker("exec", "db1", "nslookup", "database").stdout
    daemon.stop()
    daemon.start()
    assert "10.81.0.2" in daemon.docker("exec", "db1", "nslookup", "database").stdout
    nat = _sandbox_nat(db1)
    assert nat == nat_before
    assert sum("-j MUSLIN-DNS" in r for r in nat) == 1 and sum("-j DNAT" in r for r in nat) == 2
    # Names on networks the asker is not on stay unknown to it.
    other = daemon.docker("run", "--rm", "--network", "app", "busybox", "nslookup", "elsewhere", check=False)
    assert "10.82.0." not in other.stdout
    # The default bridge keeps the host's resolvers, as in Docker.
    assert "127.0.0.11" not in daemon.docker("run", "--rm", "busybox", "cat", "/etc/resolv.conf").stdout


def test_what_a_user_network_gives_a_container_as_dockerd_does(daemon) -> None:
    """Names (hostname, <name>.<network>), the resolver after a connect, the default route after a
    disconnect, the host's /etc/hosts for --network host, and clear refusals instead of silent ignores."""
    daemon.docker("network", "create", "--subnet", "10.83.0.0/24", "un")
    daemon.docker("network", "create", "--subnet", "10.84.0.0/24", "un2")
    daemon.docker("run", "-d", "--name", "web", "--network", "un", "--hostname", "webhost", "busybox", "sleep", "300")
    for name in ("webhost", "web.un", "webhost.un"):
        out = daemon.docker("run", "--rm", "--network", "un", "busybox", "nslookup", name, check=False).stdout
        assert "10.83.0.2" in out, (name, out)

    # A default-bridge container connected to a user network gets the embedded resolver at once.
    daemon.docker("run", "-d", "--name", "c1", "busybox", "sleep", "300")
    daemon.docker("network", "connect", "un", "c1")
    assert "nameserver 127.0.0.11" in daemon.docker("exec", "c1", "cat", "/etc/resolv.conf").stdout
    assert "10.83.0.2" in daemon.docker("exec", "c1", "nslookup", "web").stdout
    # Leaving the network that held the default route: the next one with a gateway takes it over.
    daemon.docker("network", "disconnect", "bridge", "c1")
    assert "default via 10.83.0.1" in daemon.docker("exec", "c1", "ip", "route").stdout

    missing = daemon.docker("run", "--rm", "--network", "nosuchnet", "busybox", "true", check=False)
    assert missing.returncode != 0 and "network nosuchnet not found" in missing.stderr
    assert "Unable to find image" not in missing.stderr  # a 404 from create would send the CLI pulling
    for args, message in ((["--hostname", "x"], "conflicting options: hostname and the network mode"),
                          (["--add-host", "a:10.1.1.1"], "custom host-to-IP mapping and the network mode"),
                          (["--dns", "10.1.1.1"], "conflicting options: dns and the network mode")):
        out = daemon.docker("run", "--rm", "--network", "container:web", *args, "busybox", "true", check=False)
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr)
    with open("/etc/hosts") as f:
        assert daemon.docker("run", "--rm", "--network", "host", "busybox", "cat", "/etc/hosts").stdout == f.read()
    with_extra = daemon.docker("run", "--rm", "--network", "host", "--add-host", "gw:host-gateway", "busybox",
                               "cat", "/etc/hosts").stdout
    assert with_extra.endswith("172.17.0.1\tgw\n")  # the host's names, then the extra ones
    hosts = daemon.docker("exec", "c1", "cat", "/etc/hosts").stdout  # rewritten at connect and disconnect
    assert "10.83.0.3\t" in hosts and "172.17." not in hosts
    daemon.docker("rm", "-f", "web", "c1")

    dotted = daemon.docker("run", "--rm", "--network", "un", "--hostname", "foo", "--domainname", "ex.com",
                           "busybox", "cat", "/etc/hosts").stdout
    assert "\tfoo.ex.com foo" in dotted
    daemon.docker("network", "create", "auto")  # IPAM picks the subnet: no --ip there, as dockerd
    fixed = daemon.docker("run", "--rm", "--network", "auto", "--ip", "172.18.0.77", "busybox", "true", check=False)
    assert fixed.returncode != 0 and "networks with user configured subnets" in fixed.stderr
    aux = daemon.docker("network", "create", "--subnet", "10.85.0.0/24", "--gateway", "10.85.0.1",
                        "--aux-address", "r=10.85.0.1", "auxnet", check=False)
    assert aux.returncode != 0 and "Address already in use" in aux.stderr
    aux = daemon.docker("network", "create", "--subnet", "10.86.0.0/24", "--aux-address", "r=10.86.0.1", "auxnet2",
                        check=False)  # the default gateway is taken first
    assert aux.returncode != 0 and "Address already in use" in aux.stderr
    ghost = daemon.docker("network", "disconnect", "-f", "un", "ghost", check=False)
    assert ghost.returncode != 0 and "endpoint ghost not found" in ghost.stderr
