"""An etcd cluster with one member per simulated host, each listening on its host's address.

Members run ``etcd`` (Debian's etcd-server) under ``nsenter --net``, with the v2 API enabled (the seed's
flannel 0.7 uses it), data and logs under one directory; ``v3_gateway=False`` turns off the v3 JSON
gateway, so that over HTTP only v2 answers (as from an etcd 2). Members can be stopped and started one by one
to test failover.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from muslin.kernel import netns
from muslin.lab.topology import Host

CLIENT_PORT = 2379
PEER_PORT = 2380


class EtcdClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class TlsConfig:
    """Server certificate and the CA that client certificates must chain to (client-cert-auth on)."""

    cafile: str
    certfile: str
    keyfile: str


class EtcdCluster:
    def __init__(self, hosts: Sequence[Host], data_dir: str, tls: TlsConfig | None = None,
                 binary: str = "etcd", names: Sequence[str] | None = None, detached: bool = False,
                 v3_gateway: bool = True) -> None:
        """``names``: member names (default m1, m2, ...); ``detached``: members in their own session, so
        they outlive the process that started them (the lab's ``up``)."""
        if not hosts:
            raise ValueError("an etcd cluster needs at least one host")
        found = shutil.which(binary) or shutil.which(binary, path="/usr/bin:/usr/sbin")
        if not found:
            raise EtcdClusterError(f"{binary} not found: install Debian's etcd-server")
        self.binary = found
        self.hosts = list(hosts)
        self.data_dir = data_dir
        self.tls = tls
        self.token = f"muslin-{uuid.uuid4().hex[:8]}"
        self.names = list(names) if names else [f"m{i + 1}" for i in range(len(self.hosts))]
        self.detached = detached
        self.v3_gateway = v3_gateway
        self._procs: dict[int, subprocess.Popen] = {}

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def member_name(self, i: int) -> str:
        return self.names[i]

    def pids(self) -> list[int]:
        return [self._procs[i].pid for i in sorted(self._procs)]

    def client_url(self, i: int) -> str:
        return f"{self.scheme}://{self.hosts[i].address}:{CLIENT_PORT}"

    @property
    def endpoints(self) -> list[str]:
        return [self.client_url(i) for i in range(len(self.hosts))]

    def _command(self, i: int, state: str) -> list[str]:
        host = self.hosts[i]
        peers = ",".join(f"{self.member_name(j)}=http://{h.address}:{PEER_PORT}" for j, h in enumerate(self.hosts))
        cmd = ["nsenter", f"--net={host.netns}", self.binary,
               "--name", self.member_name(i),
               "--data-dir", os.path.join(self.data_dir, self.member_name(i)),
               "--listen-client-urls", self.client_url(i), "--advertise-client-urls", self.client_url(i),
               "--listen-peer-urls", f"http://{host.address}:{PEER_PORT}",
               "--initial-advertise-peer-urls", f"http://{host.address}:{PEER_PORT}",
               "--initial-cluster", peers, "--initial-cluster-state", state,
               "--initial-cluster-token", self.token, "--enable-v2",
               "--heartbeat-interval", "50", "--election-timeout", "500",
               "--logger", "zap", "--log-level", "warn"]
        if not self.v3_gateway:
            cmd.append("--enable-grpc-gateway=false")
        if self.tls:
            cmd += ["--cert-file", self.tls.certfile, "--key-file", self.tls.keyfile,
                    "--trusted-ca-file", self.tls.cafile, "--client-cert-auth"]
        return cmd

    def start_member(self, i: int) -> None:
        if i in self._procs and self._procs[i].poll() is None:
            return
        os.makedirs(self.data_dir, exist_ok=True)
        state = "existing" if os.path.isdir(os.path.join(self.data_dir, self.member_name(i))) else "new"
        log = open(os.path.join(self.data_dir, f"{self.member_name(i)}.log"), "ab")
        try:
            self._procs[i] = subprocess.Popen(self._command(i, state), stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=self.detached)
        finally:
            log.close()

    def stop_member(self, i: int, timeout: float = 10) -> None:
        proc = self._procs.pop(i, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start(self, timeout: float = 30) -> None:
        for i in range(len(self.hosts)):
            self.start_member(i)
        self.wait_healthy(timeout=timeout)

    def stop(self) -> None:
        for i in list(self._procs):
            self.stop_member(i)

    def member_healthy(self, i: int) -> bool:
        proc = self._procs.get(i)
        if proc is None or proc.poll() is not None:
            return False
        try:
            # The socket is made in the host's namespace; urllib runs on this thread, which is there.
            with netns.entered(self.hosts[i].netns):
                if self.tls:
                    # Without a client certificate of our own, a listening TLS port is the best we know.
                    socket.create_connection((str(self.hosts[i].address), CLIENT_PORT), timeout=1).close()
                    return True
                with urllib.request.urlopen(f"{self.client_url(i)}/health", timeout=1) as resp:
                    return b'"true"' in resp.read()
        except OSError:
            return False

    def wait_healthy(self, members: Sequence[int] | None = None, timeout: float = 30) -> None:
        wanted = list(range(len(self.hosts))) if members is None else list(members)
        deadline = time.monotonic() + timeout
        while True:
            dead = [i for i in wanted if i in self._procs and self._procs[i].poll() is not None]
            if dead:
                raise EtcdClusterError(f"etcd member {self.member_name(dead[0])} exited; see "
                                       f"{os.path.join(self.data_dir, self.member_name(dead[0]) + '.log')}")
            if all(self.member_healthy(i) for i in wanted):
                return
            if time.monotonic() > deadline:
                raise EtcdClusterError(f"etcd cluster not healthy after {timeout:.0f}s")
            time.sleep(0.1)

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
