"""muslind: the engine behind a Docker Engine API socket. Flags are named and mean what dockerd's do."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
from ipaddress import IPv4Interface
from pathlib import Path

from muslin import __version__, daemon_json, listeners
from muslin.api.app import build_server
from muslin.engine import firewall_choice
from muslin.engine.cluster_store import parse_cluster_config
from muslin.engine.config import DaemonConfig, parse_bool
from muslin.engine.engine import Engine
from muslin.errors import EngineError
from muslin.fabric.files import read_subnet_env
from muslin.listeners import Listener, TcpListener, UnixListener

log = logging.getLogger("muslind")


def parse_flag_bool(text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_bip(text: str) -> IPv4Interface:
    try:
        bip = IPv4Interface(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --bip {text!r}: expected an address with a prefix, like 172.21.31.1/24") from None
    if "/" not in text:
        raise argparse.ArgumentTypeError(f"invalid --bip {text!r}: the prefix length is missing")
    if bip.ip in (bip.network.network_address, bip.network.broadcast_address):
        raise argparse.ArgumentTypeError(f"invalid --bip {text!r}: the gateway cannot be the network or broadcast address")
    return bip


def parse_host(text: str) -> Listener:
    try:
        return listeners.parse_host(text)
    except listeners.ListenError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="muslind", description="muslin's container engine (Docker Engine API)")
    flag = {"type": parse_flag_bool, "nargs": "?", "const": True}
    p.add_argument("-H", "--host", dest="hosts", type=parse_host, action="append", default=None,
                   help="where to listen, repeatable: unix:///path (default unix:///run/muslin.sock) or "
                        "tcp://ADDRESS:PORT (TLS client verification required)")
    p.add_argument("-G", "--group", default=None,
                   help="group of the unix sockets (mode 0660); default docker where it exists, else root")
    cert_dir = listeners.default_cert_dir()
    p.add_argument("--tlsverify", default=bool(os.environ.get("DOCKER_TLS_VERIFY")), **flag,
                   help="serve tcp with TLS and require client certificates signed by --tlscacert")
    p.add_argument("--tls", default=False, **flag, help="implied by --tlsverify (TLS without it is refused)")
    p.add_argument("--tlscacert", default=str(cert_dir / "ca.pem"))
    p.add_argument("--tlscert", default=str(cert_dir / "cert.pem"))
    p.add_argument("--tlskey", default=str(cert_dir / "key.pem"))
    p.add_argument("--data-root", default="/var/lib/muslin", help="persistent state")
    p.add_argument("--exec-root", default="/run/muslin", help="runtime state")
    p.add_argument("-p", "--pidfile", default="")
    p.add_argument("-b", "--bridge", dest="bridge_name", default="muslin0",
                   help="name of the default bridge device (dockerd's -b)")
    p.add_argument("--bridge-name", dest="bridge_name", help="same as --bridge")
    p.add_argument("--bip", type=parse_bip, default=None, help="default bridge gateway and subnet, e.g. 172.21.31.1/24")
    p.add_argument("--mtu", type=int, default=None, help="default bridge MTU (1500)")
    p.add_argument("--ip-masq", default=None, **flag)
    p.add_argument("--iptables", default=True, **flag)
    p.add_argument("--firewall-backend", default="",
                   help="nftables or iptables: how the host's rules are written (--iptables still says "
                        "whether they are). Default nftables where the kernel has nf_tables, libnftables "
                        "loads and iptables' FORWARD has neither a DROP policy nor a catch-all DROP/REJECT, "
                        "else iptables (the start logs which and why). See the rules with "
                        "'nft list table ip muslin' (nftables) or 'iptables-save' (iptables)")
    p.add_argument("--ip-forward", default=True, **flag)
    p.add_argument("--icc", default=True, **flag)
    p.add_argument("--ip", dest="default_bind_ip", default="0.0.0.0", help="default host IP for published ports")
    p.add_argument("--flannel-subnet-file", default="",
                   help="take --bip, --mtu and --ip-masq from a flannel subnet.env (flags given win)")
    p.add_argument("--cluster-store", default="",
                   help="etcd://host:port[,host:port...][/prefix]: share overlay networks with the engines on it")
    p.add_argument("--cluster-advertise", default="",
                   help="IFACE:PORT or IP:PORT: this engine's address in the cluster (the overlay's VTEP)")
    p.add_argument("--cluster-store-opt", action="append", default=[],
                   help="kv.cacertfile=, kv.certfile=, kv.keyfile= (TLS to etcd), discovery.ttl=, "
                        "discovery.heartbeat= (the engine's lease); repeatable")
    p.add_argument("--config-file", type=Path, default=None,
                   help=f"dockerd's daemon.json, muslind's keys (default {daemon_json.DEFAULT_PATH}, if present)")
    p.add_argument("-D", "--debug", action="store_true")
    p.add_argument("-v", "--version", action="version", version=f"muslind {__version__}")
    return p


def config_from_args(args: argparse.Namespace) -> DaemonConfig:
    bip, mtu, masq = args.bip, args.mtu, args.ip_masq
    if args.flannel_subnet_file:
        env = read_subnet_env(args.flannel_subnet_file)
        bip = bip or parse_bip(env["FLANNEL_SUBNET"])
        mtu = mtu or int(env["FLANNEL_MTU"])
        if masq is None:
            # flannel masquerades for the overlay itself when FLANNEL_IPMASQ=true (mk-docker-opts inverts it)
            masq = not parse_bool(env.get("FLANNEL_IPMASQ", "false"))
    if mtu is not None and not 68 <= mtu <= 65535:
        raise SystemExit(f"muslind: invalid --mtu {mtu}: it must be between 68 and 65535")
    if args.firewall_backend not in ("", *firewall_choice.BACKENDS):
        raise SystemExit('muslind: invalid firewall-backend: allowed values are "iptables" and "nftables"')
    cluster = None
    if args.cluster_store:
        try:
            cluster = parse_cluster_config(args.cluster_store, args.cluster_advertise, args.cluster_store_opt)
        except ValueError as exc:
            raise SystemExit(f"muslind: {exc}") from None
    elif args.cluster_advertise or args.cluster_store_opt:
        raise SystemExit("muslind: --cluster-advertise and --cluster-store-opt need --cluster-store")
    return DaemonConfig(data_root=Path(args.data_root), exec_root=Path(args.exec_root),
                        bridge_name=args.bridge_name, bip=bip, mtu=mtu or 1500, ip_masq=True if masq is None else masq,
                        iptables=args.iptables, firewall_backend=args.firewall_backend,
                        ip_forward=args.ip_forward, icc=args.icc,
                        default_bind_ip=args.default_bind_ip, cluster=cluster)


def raise_descriptor_limit() -> None:
    """Every running container holds descriptors of muslind's (its DNS sockets, its exit watch): the
    soft limit goes up to the hard one, as Go programs such as dockerd do, or a thousand containers
    would not fit in the usual 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(args: argparse.Namespace) -> int:
    hosts: list[Listener] = args.hosts or [UnixListener(listeners.DEFAULT_UNIX)]
    # Every listener's flags are checked before anything is set up: a refusal changes nothing.
    listeners.check_tcp(hosts, args.tlsverify)
    gid = listeners.socket_gid(args.group)
    tls = (listeners.server_tls_context(listeners.TlsFiles(args.tlscacert, args.tlscert, args.tlskey))
           if any(isinstance(h, TcpListener) for h in hosts) else None)
    raise_descriptor_limit()
    engine = Engine(config_from_args(args))
    await engine.start()
    server = build_server(engine)
    for host in hosts:
        if isinstance(host, UnixListener):
            await server.start_unix(host.path, gid)
            log.info("muslind %s listening on unix://%s", __version__, host.path)
        else:
            assert tls is not None
            await server.start_tcp(host.host, host.port, tls)
            log.info("muslind %s listening on tcp://%s:%d (TLS, client certificates verified)", __version__,
                     host.host or "0.0.0.0", host.port)
    engine.follow_running()
    if args.pidfile:
        Path(args.pidfile).write_text(f"{os.getpid()}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down (containers keep running)")
    await server.close()
    engine.close()
    for host in hosts:
        if isinstance(host, UnixListener):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(host.path)
    if args.pidfile:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.pidfile)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        daemon_json.merge(args, daemon_json.given_flags(parser, args, argv),
                          args.config_file or daemon_json.DEFAULT_PATH, args.config_file is not None, parse_bip)
    except daemon_json.ConfigFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s muslind %(levelname)s %(message)s")
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
    except EngineError as exc:  # refused at start (flags in conflict with state): say why, exit 1
        log.error("%s", exc.message)
        return 1
    except listeners.ListenError as exc:  # -H/-G/TLS flags that cannot be served: nothing was set up
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
