"""The embedded DNS of each container on a user-defined network: bound, served and stopped per container.

``dns`` is the server (one per container); this service gives it its sockets, its redirect and the names
it answers. As dockerd, the sockets listen on 127.0.0.11 on ports of their own inside the container's
namespace, behind a DNAT of 127.0.0.11:53 (chain MUSLIN-DNS, through ``firewall.SandboxFirewall``), so
port 53 stays free for a DNS server in the container.

Threads: ``bind`` and the ``*_soon`` calls run on the engine's worker thread (binding enters the
container's namespace and programs its redirect, as part of a start or a connect); ``serve``, ``stop``,
``resolve`` and the servers themselves run on the event loop. The sockets the worker binds wait in
``_bound`` until the loop serves them (a query sent meanwhile waits in the socket instead of being
refused) or a failed start discards them: that table, under its lock, is all the two threads share.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from muslin.kernel import iptables, netns

from . import dns
from .firewall import DNSRedirect, SandboxFirewall
from .gwbridge import is_gateway_bridge
from .model import Endpoint, Network
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class BoundSockets:
    """A container's DNS sockets inside its namespace, bound but not served yet."""

    udp: socket.socket
    tcp: socket.socket

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


def bind_sockets(sandbox: str, udp_port: int, tcp_port: int, exact: bool = False) -> BoundSockets:
    """UDP and TCP sockets on 127.0.0.11 inside the sandbox (made in one visit to it: a start of muslind
    binds a thousand containers'); a wanted port that is taken gives way to any free one, unless
    ``exact``."""
    udp, tcp = netns.inet_sockets_in(sandbox, (socket.SOCK_DGRAM, socket.SOCK_STREAM))
    try:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for sock, port in ((udp, udp_port), (tcp, tcp_port)):
            try:
                sock.bind((dns.EMBEDDED_ADDRESS, port))
            except OSError:
                if exact or port == 0:
                    raise
                sock.bind((dns.EMBEDDED_ADDRESS, 0))
        tcp.listen(16)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return BoundSockets(udp, tcp)


class DNSService:
    """Per container: ``bind`` (worker), ``serve`` and ``stop`` (event loop); see the module's docstring."""

    def __init__(self, store: Store, network: Callable[[str], Network],
                 remote: Callable[[str], list[Endpoint]] = lambda network_id: []) -> None:
        self.store = store
        self.network = network  # a network by id (the store's record)
        self.remote = remote  # other engines' endpoints on a global network, by its id
        self.sandbox_firewall = SandboxFirewall()
        self.loop: asyncio.AbstractEventLoop | None = None  # set once the engine runs on it
        self._lock = threading.Lock()
        self._bound: dict[str, BoundSockets] = {}  # worker → loop hand-off, under _lock
        self._servers: dict[str, dns.EmbeddedDNS] = {}  # event loop only
        self._background: set[asyncio.Task] = set()  # event loop only

    # -- engine's worker thread --------------------------------------------------------------------
    def bind(self, cid: str, name: str, sandbox: str, fresh_sandbox: bool = False) -> bool:
        """Bind the container's DNS sockets before its process runs; False: it gets no embedded DNS
        (logged). ``fresh_sandbox``: the namespace was just made, it holds no redirect to read."""
        try:
            sockets = self._bind_behind_redirect(cid, sandbox, fresh_sandbox)
        except (OSError, iptables.IptablesError) as exc:
            # No nat table to redirect with (no iptables here, say): the sockets take 127.0.0.11:53
            # itself, at the price of that port inside the container, rather than no DNS at all.
            log.warning("embedded DNS of %s listens on 127.0.0.11:53 itself: %s", name, exc)
            try:
                sockets = bind_sockets(sandbox, 53, 53, exact=True)
            except OSError as exc:
                log.warning("no embedded DNS for %s: %s", name, exc)
                return False
        with self._lock:
            stale = self._bound.pop(cid, None)
            self._bound[cid] = sockets
        if stale is not None:
            stale.close()
        return True

    def _bind_behind_redirect(self, cid: str, sandbox: str, fresh_sandbox: bool) -> BoundSockets:
        """Sockets on ports of their own and the DNAT that sends 127.0.0.11:53 to them. A namespace
        that had them before gets its old ports back if they are free: conntrack pins a client's flow
        (a resolver that keeps its source port, as nginx does) to the port it saw first.

        The store keeps the ports each redirect was last set to: a namespace that holds one (it was not
        made afresh) and whose ports are still free needs neither its nat table read nor a new redirect,
        two iptables runs per container that made a restart with a thousand of them take seconds."""
        known = None if fresh_sandbox else self.store.dns_ports(cid)
        if known is not None:
            try:
                return bind_sockets(sandbox, *known, exact=True)
            except OSError:
                pass  # taken meanwhile (by the container's own processes): read and redirect afresh
        previous, jumped = DNSRedirect(dns.EMBEDDED_ADDRESS, 0, 0), False
        if not fresh_sandbox:
            previous, jumped = self.sandbox_firewall.read_dns_redirect(sandbox, dns.EMBEDDED_ADDRESS)
        sockets = bind_sockets(sandbox, previous.udp_port, previous.tcp_port)
        try:
            redirect = DNSRedirect(dns.EMBEDDED_ADDRESS, sockets.udp.getsockname()[1], sockets.tcp.getsockname()[1])
            self.sandbox_firewall.set_dns_redirect(sandbox, redirect, add_jump=not jumped)
            with self.store.transaction() as db:
                self.store.put_dns_ports(db, cid, redirect.udp_port, redirect.tcp_port)
        except BaseException:
            sockets.close()
            raise
        return sockets

    def discard(self, cid: str) -> None:
        """Close sockets bound for a start that failed before they were served."""
        with self._lock:
            sockets = self._bound.pop(cid, None)
        if sockets is not None:
            sockets.close()

    def serve_soon(self, cid: str, name: str, sandbox: str, upstreams: list[str]) -> None:
        """Have the loop serve what ``bind`` just bound (a connect, which does not wait for it)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._serve_in_background, cid, name, sandbox, upstreams)

    def stop_soon(self, cid: str) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.stop, cid)

    # -- event loop ----------------------------------------------------------------------------------
    async def serve(self, cid: str, sandbox: str, upstreams: list[str]) -> None:
        """Serve the sockets ``bind`` left for this container, if any."""
        with self._lock:
            sockets = self._bound.pop(cid, None)
        if sockets is None:
            return
        server = dns.EmbeddedDNS(lambda name: self.resolve(cid, name), upstreams, sandbox)
        replaced = self._servers.pop(cid, None)
        if replaced is not None:
            replaced.close()
        self._servers[cid] = server
        try:
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: server, sock=sockets.udp)
            await server.serve_tcp(sockets.tcp)
        except BaseException:
            if self._servers.get(cid) is server:
                del self._servers[cid]
            server.close()
            sockets.close()
            raise
        if self._servers.get(cid) is not server:
            # Stopped meanwhile (an exit, an rm -f): stop() closed what existed then, not what the
            # awaits above made since; close it all now, or it would serve a dead namespace forever.
            server.close()

    def _serve_in_background(self, cid: str, name: str, sandbox: str, upstreams: list[str]) -> None:
        def done(task: asyncio.Task) -> None:
            self._background.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("embedded DNS of %s: %s", name, task.exception())

        task = asyncio.ensure_future(self.serve(cid, sandbox, upstreams))
        self._background.add(task)
        task.add_done_callback(done)

    def stop(self, cid: str) -> None:
        """The container's process is gone (or the container): its DNS goes too."""
        self.discard(cid)  # bound for a start that serve() did not reach
        server = self._servers.pop(cid, None)
        if server is not None:
            server.close()

    def resolve(self, cid: str, name: str) -> list[IPv4Address] | None:
        """Addresses of ``name`` as container ``cid`` sees it: containers (by name, alias or short id)
        on the user-defined networks it shares with them. None: not a name of ours."""
        # Endpoints carry their container's name and aliases (rename updates them), so a query reads
        # only the endpoints of the networks the asker is on.
        # A name is the container's name, short id, hostname or an alias, alone or as <name>.<network>.
        mine_all = [e for e in self.store.endpoints(container_id=cid)
                    if not self.network(e.network_id).predefined and not is_gateway_bridge(self.network(e.network_id))]
        # An endpoint's link alias comes first and only on that endpoint's network (dockerd's order).
        for mine in mine_all:
            target = mine.link_aliases.get(name)
            if target is not None:
                linked = self._names_on(mine.network_id, target, target)
                if linked:
                    return linked
        found: list[IPv4Address] = []
        for mine in mine_all:
            suffix = "." + self.network(mine.network_id).name.lower()
            found += self._names_on(mine.network_id, name, name[:-len(suffix)] if name.endswith(suffix) else name)
        return found or None

    def _names_on(self, network_id: str, name: str, short: str) -> list[IPv4Address]:
        """Addresses of the endpoints on the network that go by ``name`` or ``short``."""
        found = []
        for ep in [*self.store.endpoints(network_id=network_id), *self.remote(network_id)]:
            names = {ep.container_name.lower(), ep.container_id[:12], ep.hostname.lower(),
                     *(a.lower() for a in ep.aliases)} - {""}
            if ep.address is not None and (name in names or short in names):
                found.append(ep.address.ip)
        return found
