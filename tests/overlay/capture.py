"""A packet capture on an underlay interface with a raw AF_PACKET socket (no tcpdump needed): what
crossed it, as (IP protocol, VXLAN VNI or None) per IPv4 packet."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from muslin.kernel import netns

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
VXLAN_PORT = 4789
IPPROTO_UDP = 17


@dataclass
class Capture:
    """Runs in a thread from start() until stop() (at most ``limit`` seconds); ``seen`` counts packets by
    (protocol, VNI) where VNI is the VXLAN id of a UDP 4789 packet and None for anything else."""

    ns: str
    iface: str
    limit: float = 60.0
    seen: Counter[tuple[int, int | None]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        with netns.entered(netns.path_for(self.ns)):
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind((self.iface, 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Capture:
        self._thread.start()
        return self

    def stop(self) -> Counter[tuple[int, int | None]]:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        return self.seen

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                frame = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP:
                continue
            header = (frame[14] & 0x0F) * 4
            proto = frame[23]
            vni = None
            if proto == IPPROTO_UDP and len(frame) >= 14 + header + 16:
                dport = struct.unpack_from("!H", frame, 14 + header + 2)[0]
                if dport == VXLAN_PORT:
                    vni = struct.unpack_from("!I", frame, 14 + header + 12)[0] >> 8
            self.seen[(proto, vni)] += 1
