"""bgp: container subnets routed over an L3 underlay by BIRD, as Calico does, with no encapsulation.

Each node runs its own BIRD (``bird.py``) and exports only its own subnet (a blackhole route for it, which
the bridge's connected route overrides); what BIRD learns goes into the kernel as plain routes. Sessions:
the nodes of the lease table with each other (iBGP full mesh, or through route reflectors) and the
BGPPeers from etcd (``bgppeers.py``). Every change re-renders bird.conf and reloads it, never restarting
BIRD; the agent's restarts leave a BIRD that answers running, and a BIRD that died is started again by the next
reconcile. A BIRD that runs but does not answer (hung, or stopped) is killed before another is started, and
at the agent's stop it is stopped and what it left removed: nobody would run it or its routes any more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pyroute2 import IPRoute

from muslin.fabric.backends.base import Backend, ExternalInterface, LocalNetwork
from muslin.fabric.bgppeers import BgpResources
from muslin.fabric.bird import Bird, BirdConfig, BirdError, BgpNeighbor, ProtocolStatus, protocol_name, render_config
from muslin.fabric.config import BgpSettings, NetworkConfig
from muslin.fabric.subnets import Lease, LeaseAttrs
from muslin.kernel import route, rtnl

log = logging.getLogger(__name__)
RTPROT_BIRD = 12  # the protocol number the kernel shows BIRD's routes with (rtnetlink.h)
# A BIRD asked to stop gets this long to withdraw its routes and remove its files itself before SIGKILL.
STOP_GRACE = 1.5


def plan_neighbors(me: IPv4Address, settings: BgpSettings, nodes: Iterable[IPv4Address], resources: BgpResources,
                   on_l2: Callable[[IPv4Address], bool]) -> tuple[BgpNeighbor, ...]:
    """This node's BGP sessions.

    With NodeToNodeMesh: every other node (full iBGP mesh), or, once any node is a route reflector, only
    the reflectors (a reflector itself peers with every node, non-reflectors as its clients). Then every
    BGPPeer for all nodes or for this one; a peer at a node's address replaces that node's mesh session.
    """
    asn = settings.as_number
    neighbors: dict[IPv4Address, BgpNeighbor] = {}
    if settings.node_to_node_mesh:
        others = sorted(set(nodes) - {me})
        reflectors = resources.reflectors & (set(others) | {me})
        for node in others:
            if reflectors and me not in reflectors and node not in reflectors:
                continue
            client = me in reflectors and node not in reflectors
            neighbors[node] = BgpNeighbor(protocol_name("mesh", str(node)), node, asn, on_l2(node),
                                          rr_client=client, reflect=me in reflectors)
    for peer in resources.peers:
        if peer.node is None or peer.node == me:
            neighbors[peer.peer_ip] = BgpNeighbor(protocol_name("peer", peer.name), peer.peer_ip, peer.as_number,
                                                  on_l2(peer.peer_ip))
    return tuple(sorted(neighbors.values(), key=lambda n: n.name))


class BgpBackend(Backend):
    type = "bgp"

    def __init__(self, config: NetworkConfig, ext: ExternalInterface, ipr: IPRoute, state_dir: str) -> None:
        super().__init__(config, ext, ipr)
        self.settings = config.backend.bgp or BgpSettings()
        self.bird = Bird(Path(state_dir))
        self._own: IPv4Network | None = None
        self._nodes: dict[IPv4Network, IPv4Address] = {}
        self._resources = BgpResources()
        # A running BIRD keeps its config until we know the whole picture (leases and peers): rendering it
        # from half of it after an agent restart would drop the sessions we have not read yet.
        self._leases_known = False
        self._resources_known = False
        self._sessions: dict[str, str] = {}
        # Set by interrupt() on another thread (a plain flag: one store, read by the kernel thread) so that a call
        # still running there starts no BIRD once the agent stops.
        self._closing = False

    @property
    def mtu(self) -> int:
        return self.config.backend.mtu or self.ext.mtu  # no encapsulation

    def lease_attrs(self) -> LeaseAttrs:
        return LeaseAttrs(self.ext.public_ip, "bgp")

    def register_network(self, lease: Lease) -> LocalNetwork:
        self._own = lease.subnet
        self._sync()
        return LocalNetwork(self.ext.name, self.mtu)

    def _node_address(self, lease: Lease) -> IPv4Address | None:
        if lease.attrs.backend_type != "bgp":
            self.warn_once((lease.subnet, lease.attrs.to_json()), logging.WARNING,
                           "peer %s (%s) runs backend %s, not bgp: not reachable from this node",
                           lease.subnet, lease.attrs.public_ip, lease.attrs.backend_type or "udp")
            return None
        return lease.attrs.public_ip

    def add_peer(self, lease: Lease) -> None:
        if (address := self._node_address(lease)) is not None:
            self._nodes[lease.subnet] = address
            self._sync()

    def remove_peer(self, lease: Lease) -> None:
        if self._nodes.pop(lease.subnet, None) is not None:
            self._sync()

    def reconcile(self, peers: Iterable[Lease]) -> None:
        self._nodes = {p.subnet: a for p in peers if (a := self._node_address(p)) is not None}
        self._leases_known = True
        self._sync(supervise=True)

    def set_resources(self, resources: BgpResources) -> None:
        if resources != self._resources or not self._resources_known:
            log.info("BGP peers from etcd: %s; route reflectors: %s",
                     ", ".join(f"{p.name}={p.peer_ip} AS {p.as_number}{f' for {p.node}' if p.node else ''}"
                               for p in resources.peers) or "none",
                     ", ".join(map(str, sorted(resources.reflectors))) or "none")
        self._resources = resources
        self._resources_known = True
        self._sync()

    def _on_l2(self, address: IPv4Address) -> bool:
        gateway, oif = route.route_source(self.ipr, address)
        return gateway is None and oif == self.ext.index

    def bird_config(self) -> BirdConfig:
        s = self.settings
        neighbors = plan_neighbors(self.ext.address, s, self._nodes.values(), self._resources, self._on_l2)
        return BirdConfig(router_id=self.ext.address, as_number=s.as_number, network=self.config.network,
                          subnet_len=self.config.subnet_len, own_subnet=self._own, neighbors=neighbors,
                          source_address=self.ext.address, graceful_restart=s.graceful_restart,
                          restart_time=s.restart_time, hold_time=s.hold_time, bfd=s.bfd,
                          log_file=str(self.bird.log_path))

    def _sync(self, supervise: bool = False) -> None:
        """Bring BIRD's config up to date; with supervise, also start a BIRD that is not running."""
        if self._own is None or self._closing:
            return
        pid = self.bird.pid()
        running = pid is not None and (not supervise or self.bird.answering())
        if running and not (self._leases_known and self._resources_known):
            return
        config = self.bird_config()
        text = render_config(config)
        if running:
            if self.bird.config_path.exists() and self.bird.config_path.read_text() == text:
                return
            self.bird.check(text)
            self.log_session_changes()  # what the reload ends shows in the log as it was before
            self.bird.write_config(text)
            reply = self.bird.configure()
            log.info("BIRD reconfigured (%s): %d BGP sessions", reply.splitlines()[-1][5:], len(config.neighbors))
            self.log_session_changes()
            return
        # A pid file left behind means BIRD died (it removes the file when it stops): recover gracefully.
        crashed = self.bird.pid_path.exists() and self.settings.graceful_restart
        if pid is not None:
            # Alive but silent (hung, or stopped): a second BIRD beside it would fight it for the BGP port and
            # outlive it untracked. Killed rather than stopped, so that its routes stay until the new one has
            # the peers' routes again (graceful restart), as after a crash.
            log.warning("BIRD (pid %d) does not answer on %s: killing it to start another", pid, self.bird.socket_path)
            self.bird.kill(pid)
        self.bird.check(text)
        self.bird.write_config(text)
        pid = self.bird.start(recover=crashed)
        log.info("BIRD started (pid %d%s; config %s, control socket %s)", pid,
                 ", graceful restart recovery after a crash" if crashed else "", self.bird.config_path,
                 self.bird.socket_path)
        self._sessions = {}

    def interrupt(self) -> None:
        """The agent stops: a BIRD that does not answer is ended now, which also ends at once any wait of the
        kernel thread on it (a control command, up to CONTROL_TIMEOUT; a start, up to START_TIMEOUT). Its files
        are left to close(), on the kernel thread: a start running there may be writing new ones."""
        self._closing = True
        pid = self.bird.pid()
        if pid is not None and not self.bird.answering():
            log.warning("BIRD (pid %d) does not answer on %s: stopping it", pid, self.bird.socket_path)
            self.bird.end(pid, STOP_GRACE)

    def close(self) -> None:
        """A BIRD that answers keeps running, sessions up, for the next agent (see the module's docstring). Any
        other is stopped, and what it left removed: its socket and pid file, and its routes when it was killed
        or had died (a clean stop withdraws them itself)."""
        self._closing = True
        pid = self.bird.pid()
        if pid is not None and self.bird.answering():
            return
        if pid is not None:
            log.warning("BIRD (pid %d) does not answer on %s at close: stopping it and removing what it left",
                        pid, self.bird.socket_path)
        self.bird.stop(STOP_GRACE)
        # What our BIRD imports, and our own subnet's blackhole: BIRD's routes inside the network (never a
        # default route), deleted in one batch, whatever their type; one already gone is no error.
        with rtnl.RtnlSocket.beside(self.ipr) as sock:
            left = route.dump_routes(sock, within=self.config.network, proto=RTPROT_BIRD)
            sock.execute([route.delete_request(found.dst, RTPROT_BIRD) for found in left])
        for found in left:
            log.info("removed route %s left by BIRD", found.dst)

    def sessions(self) -> list[ProtocolStatus]:
        """The BGP sessions as BIRD reports them (``birdc show protocols``)."""
        return [p for p in self.bird.protocols() if p.proto == "BGP"]

    def log_session_changes(self) -> None:
        """Log every session whose state changed since the last call (the agent polls this)."""
        try:
            rows = self.sessions()
        except (OSError, BirdError) as exc:
            if self._sessions.get("") != "down":
                log.warning("BIRD does not answer on %s (%s); the next reconcile starts it again",
                            self.bird.socket_path, exc)
            self._sessions = {"": "down"}
            return
        current = {p.name: p.session_state for p in rows}
        for row in rows:
            before = self._sessions.get(row.name)
            if before != row.session_state:
                log.info("BGP session %s: %s -> %s%s", row.name, before or "new", row.session_state,
                         f" ({row.info})" if row.info != row.session_state else "")
        for name in set(self._sessions) - set(current) - {""}:
            log.info("BGP session %s: removed", name)
        self._sessions = current
