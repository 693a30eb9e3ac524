"""udp: the seed's datapath. TUN ``flannel0`` carries the whole overlay; a userspace forwarder sends
each IP packet, as is, in one UDP datagram to port 8285 of the host owning the destination subnet, and
writes datagrams it receives back into the TUN device.

The forwarder is two threads, one per direction, each a tight loop of one read and one write; both
syscalls release the GIL, so the directions overlap. Sockets and the TUN fd are non-blocking and the
loops only fall back to ``select`` when idle, so a busy forwarder pays no poll per packet, and a stop
request wakes them through a pipe.

As in flannel, a packet for an address no lease covers is answered with ICMP "net unreachable". Unlike
flannel, the inner TTL is not decremented once more: the kernel already did so routing into flannel0,
and rewriting every header would cost the forwarder a checksum update per packet.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from ipaddress import IPv4Interface

from pyroute2 import IPRoute

from muslin.fabric.backends.base import Backend, ExternalInterface, LocalNetwork
from muslin.fabric.config import UDP_DEFAULT_PORT, NetworkConfig
from muslin.fabric.subnets import Lease, LeaseAttrs
from muslin.kernel import address, link, route, tunnel

log = logging.getLogger(__name__)
TUN_NAME = "flannel0"
UDP_OVERHEAD = 28  # IPv4 + UDP headers around the inner packet
MAX_PACKET = 65535
SOCKET_BUFFER = 4 << 20
# Destination unreachable, source quench, redirect, time exceeded, parameter problem.
ICMP_ERROR_TYPES = frozenset((3, 4, 5, 11, 12))
MAX_BACKOFF = 1.0  # seconds between retries of a read that keeps failing
GIVE_UP_AFTER = 12  # consecutive failed reads (about 5 s of back-off) before a forwarder thread gives up


def ip_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071); over data that includes a correct one it is 0."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def net_unreachable(packet: bytes) -> bytes | None:
    """ICMP "net unreachable" answering packet, as flannel's udp proxy sends for a destination no lease
    covers; None for packets that must not be answered (ICMP errors, fragments after the first).

    It comes from the unreachable address itself: a reply from one of our own addresses would arrive on
    flannel0 with a local source, and the kernel drops those as martians.
    """
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 or int.from_bytes(packet[6:8], "big") & 0x1FFF:
        return None
    # Never answer an ICMP error with another (RFC 1122 3.2.2): errors about errors could bounce between
    # hosts forever. Every other packet, ICMP queries and replies included, gets the answer.
    if packet[9] == 1 and packet[ihl] in ICMP_ERROR_TYPES:
        return None
    icmp = bytearray(b"\x03\x00\x00\x00\x00\x00\x00\x00" + packet[:ihl + 8])
    icmp[2:4] = ip_checksum(bytes(icmp)).to_bytes(2, "big")
    header = bytearray(struct.pack("!BBHHHBB2x4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1,
                                   packet[16:20], packet[12:16]))
    header[10:12] = ip_checksum(bytes(header)).to_bytes(2, "big")
    return bytes(header + icmp)


class Forwarder:
    """Moves packets between the TUN fd and the UDP socket, by a table of subnet -> the peer's address."""

    def __init__(self, tun_fd: int, sock: socket.socket, subnet_len: int, port: int) -> None:
        self.tun_fd = tun_fd
        self.sock = sock
        self.port = port
        self.mask = (0xFFFFFFFF << (32 - subnet_len)) & 0xFFFFFFFF
        # Replaced whole, never mutated, so the sending loop reads it without a lock.
        self.routes: dict[int, tuple[str, int]] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._threads = [threading.Thread(target=self._run, args=(self._tun_to_udp,), name="udp-out", daemon=True),
                         threading.Thread(target=self._run, args=(self._udp_to_tun,), name="udp-in", daemon=True)]

    def _address(self, lease: Lease) -> tuple[str, int]:
        return str(lease.attrs.public_ip), self.port

    def add_peer(self, lease: Lease) -> None:
        self.routes = {**self.routes, int(lease.subnet.network_address): self._address(lease)}

    def remove_peer(self, lease: Lease) -> None:
        routes = dict(self.routes)
        routes.pop(int(lease.subnet.network_address), None)
        self.routes = routes

    def set_peers(self, peers: Iterable[Lease]) -> None:
        self.routes = {int(p.subnet.network_address): self._address(p) for p in peers}

    @property
    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        for t in self._threads:
            t.join(5)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self, loop: Callable[[], None]) -> None:
        """A direction's thread; if it ends other than by stop, it says so and reconcile builds a new one."""
        try:
            loop()
        except Exception:
            log.exception("udp forwarder %s failed", threading.current_thread().name)
        else:
            if not self._stopping:
                log.error("udp forwarder %s gave up after repeated errors", threading.current_thread().name)

    def _back_off(self, failures: int, what: str, exc: OSError) -> bool:
        """After a failed read: wait longer each time (a stop request cuts the wait short); False once the
        errors persisted long enough that a new device and socket are the better bet."""
        if failures >= GIVE_UP_AFTER:
            return False
        level = logging.WARNING if failures == 1 else logging.DEBUG
        log.log(level, "udp forwarder: %s failed: %s; retrying", what, exc)
        select.select([self._wake_r], [], [], min(MAX_BACKOFF, 0.01 * 2 ** failures))
        return True

    def _tun_to_udp(self) -> None:
        buf = bytearray(MAX_PACKET)
        view = memoryview(buf)
        buffers = [buf]
        readv, sendto, unpack_from, fd, mask = os.readv, self.sock.sendto, struct.unpack_from, self.tun_fd, self.mask
        wait_for = [fd, self._wake_r]
        failures = 0
        while not self._stopping:
            try:
                n = readv(fd, buffers)  # into the one buffer: no allocation per packet
            except BlockingIOError:
                select.select(wait_for, [], [])
                continue
            except OSError as exc:
                failures += 1
                if not self._back_off(failures, "reading flannel0", exc):
                    return
                continue
            failures = 0
            if n < 20 or buf[0] >> 4 != 4:
                continue  # not IPv4
            peer = self.routes.get(unpack_from("!I", buf, 16)[0] & mask)
            if peer is None:
                reply = net_unreachable(bytes(view[:n]))
                if reply is not None:
                    try:
                        os.write(fd, reply)
                    except OSError as exc:
                        log.debug("tun write failed: %s", exc)
                continue
            try:
                sendto(view[:n], peer)
            except BlockingIOError:
                # The socket buffer is full: give the kernel up to 0.1 s to drain it, then drop this packet,
                # as a congested link would (the transport inside retransmits); no queue of our own.
                select.select([], [self.sock], [], 0.1)
            except OSError as exc:  # about this one packet or peer (no route, too big): not the socket
                log.debug("udp send to %s failed: %s", peer, exc)

    def _udp_to_tun(self) -> None:
        buf = bytearray(MAX_PACKET)
        view = memoryview(buf)
        recv_into, write, fd = self.sock.recv_into, os.write, self.tun_fd
        wait_for = [self.sock, self._wake_r]
        failures = 0
        while not self._stopping:
            try:
                n = recv_into(buf)
            except BlockingIOError:
                select.select(wait_for, [], [])
                continue
            except OSError as exc:
                failures += 1
                if not self._back_off(failures, "receiving on the udp socket", exc):
                    return
                continue
            failures = 0
            try:
                write(fd, view[:n])
            except OSError as exc:  # a malformed packet is refused by the TUN driver
                log.debug("tun write failed: %s", exc)


class UdpBackend(Backend):
    type = "udp"

    def __init__(self, config: NetworkConfig, ext: ExternalInterface, ipr: IPRoute) -> None:
        super().__init__(config, ext, ipr)
        self.tun_fd: int | None = None
        self.sock: socket.socket | None = None
        self.forwarder: Forwarder | None = None
        self._own: Lease | None = None

    @property
    def mtu(self) -> int:
        return self.config.backend.mtu or self.ext.mtu - UDP_OVERHEAD

    @property
    def port(self) -> int:
        return self.config.backend.port or UDP_DEFAULT_PORT

    def lease_attrs(self) -> LeaseAttrs:
        return LeaseAttrs(self.ext.public_ip)  # flannel's udp leases carry no BackendType

    def _ensure_forwarder(self, rebuild: bool = False) -> None:
        if self.forwarder is not None and self.forwarder.alive and not rebuild:
            return
        routes = self.forwarder.routes if self.forwarder is not None else {}
        if self.forwarder is not None:
            log.warning("udp forwarder %s; rebuilding %s and its socket",
                        "lost its device" if rebuild else "stopped", TUN_NAME)
            self.close()
        tun_fd = tunnel.open_tun(TUN_NAME)
        sock = None
        try:
            os.set_blocking(tun_fd, False)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.bind((str(self.ext.address), self.port))
            sock.setblocking(False)
            forwarder = Forwarder(tun_fd, sock, self.config.subnet_len, self.port)
        except BaseException:
            # Nothing half-made survives: an open fd would keep flannel0 busy for the next attempt.
            if sock is not None:
                sock.close()
            os.close(tun_fd)
            raise
        self.tun_fd, self.sock, self.forwarder = tun_fd, sock, forwarder
        forwarder.routes = routes
        forwarder.start()

    def _ensure_device(self, lease: Lease) -> int:
        self._ensure_forwarder()
        device = link.find_link(self.ipr, TUN_NAME)
        if device is None:  # deleted by hand: our fd is attached to nothing now
            self._ensure_forwarder(rebuild=True)
            device = link.find_link(self.ipr, TUN_NAME)
        if device is None:
            raise tunnel.DeviceVanished(f"{TUN_NAME} vanished right after it was created")
        link.ensure_mtu(self.ipr, device.index, self.mtu)
        address.ensure_only_address(self.ipr, device.index, IPv4Interface(f"{lease.subnet.network_address}/32"))
        link.ensure_up(self.ipr, device.index)
        route.ensure_route(self.ipr, self.config.network, device.index)
        return device.index

    def register_network(self, lease: Lease) -> LocalNetwork:
        self._ensure_device(lease)
        self._own = lease
        return LocalNetwork(TUN_NAME, self.mtu)

    def add_peer(self, lease: Lease) -> None:
        # Any lease type is reachable over udp: flannel's udp backend accepts them all.
        assert self.forwarder is not None
        self.forwarder.add_peer(lease)

    def remove_peer(self, lease: Lease) -> None:
        assert self.forwarder is not None
        self.forwarder.remove_peer(lease)

    def reconcile(self, peers: Iterable[Lease]) -> None:
        if self._own is None:
            return  # register_network has not run: nothing is set up to reconcile yet
        self._ensure_device(self._own)  # also rebuilds a forwarder that stopped
        assert self.forwarder is not None
        self.forwarder.set_peers(peers)

    def close(self) -> None:
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.tun_fd is not None:
            os.close(self.tun_fd)
            self.tun_fd = None
