"""``muslin-flanneld``: flanneld's flags and environment, so existing unit files and sysconfig work.

Sources, weakest first: defaults; ``FLANNELD_<FLAG>`` variables (flanneld's own); the seed's
/etc/sysconfig/flanneld variables FLANNEL_ETCD_ENDPOINTS, FLANNEL_ETCD_PREFIX and FLANNEL_OPTIONS (as
flanneld-start passes them); the command line. Go-style single-dash flags are accepted, and glog's
logging flags (-logtostderr, --log_dir=..., -v 2) are accepted, with or without a value, and ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import sys
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from muslin.etcd import API_CHOICES, Credentials, TlsFiles, parse_endpoints
from muslin.fabric.files import DEFAULT_SUBNET_FILE
from muslin.fabric.subnets import DEFAULT_LEASE_TTL
from muslin.kernel import pyroute2_lean

# The agent (and pyroute2 with it) is imported where it is used: main() first loads pyroute2 lean.
if TYPE_CHECKING:
    from muslin.fabric.agent import AgentOptions

VERSION = "0.1.0"
DEFAULT_ENDPOINTS = "http://127.0.0.1:4001,http://127.0.0.1:2379"
GLOG_FLAGS = ("logtostderr", "alsologtostderr", "log_dir", "v", "vmodule", "stderrthreshold", "log_backtrace_at")
log = logging.getLogger("muslin.fabric")


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "t", "true", "yes", "on"):
        return True
    if low in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="muslin-flanneld", description="flannel-compatible overlay agent",
                                allow_abbrev=False)  # Go's flag package matches whole names only
    p.add_argument("--etcd-endpoints", default=DEFAULT_ENDPOINTS, help="comma-separated etcd URLs")
    p.add_argument("--etcd-prefix", default="/coreos.com/network")
    p.add_argument("--etcd-api", choices=API_CHOICES, default="auto",
                   help="etcd keyspace of the network config; auto: v3 if the config is there, else v2")
    p.add_argument("--etcd-cafile", default="")
    p.add_argument("--etcd-certfile", default="")
    p.add_argument("--etcd-keyfile", default="")
    p.add_argument("--etcd-username", default="", help="etcd user (v3: etcd auth; v2: HTTP basic auth)")
    p.add_argument("--etcd-password", default="", help="or FLANNELD_ETCD_PASSWORD, which stays out of ps")
    p.add_argument("--iface", action="append", default=None, help="interface name or address (repeatable)")
    p.add_argument("--iface-regex", action="append", default=None,
                   help="regex on interface addresses, then names (repeatable; used when --iface is not given)")
    p.add_argument("--iface-can-reach", default="",
                   help="use the interface the route to this address leaves by (after --iface, --iface-regex)")
    p.add_argument("--public-ip", default="")
    p.add_argument("--subnet-file", default=DEFAULT_SUBNET_FILE)
    p.add_argument("--docker-opts-file", default="",
                   help="mk-docker-opts.sh output (default: 'docker' next to the subnet file)")
    p.add_argument("--subnet-lease-renew-margin", type=int, default=60, help="minutes before expiry, 1 to 1439")
    p.add_argument("--subnet-lease-ttl", type=int, default=DEFAULT_LEASE_TTL, help=argparse.SUPPRESS)
    p.add_argument("--ip-masq", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--iptables-resync", type=float, default=5.0, help="seconds between reconciles")
    p.add_argument("--iptables-forward-rules", type=_bool, nargs="?", const=True, default=True)
    p.add_argument("--healthz-ip", default="0.0.0.0")
    p.add_argument("--healthz-port", type=int, default=0, help="0 disables /healthz")
    p.add_argument("--bird-dir", default="",
                   help="backend bgp: BIRD's config, control socket and pid file (default: bird/ next to the subnet file)")
    p.add_argument("--version", action="store_true")
    for name in GLOG_FLAGS:
        # glog's bools stand alone (-logtostderr) or take =value; -v also comes as "-v 2" (one dash).
        names = ["-v", "--v"] if name == "v" else [f"--{name}"]
        p.add_argument(*names, nargs="?", const="true", help=argparse.SUPPRESS)
    return p


def _normalize(argv: Sequence[str]) -> list[str]:
    """Go's flag package takes -flag and --flag alike; argparse wants the double dash."""
    return [f"-{a}" if a.startswith("-") and not a.startswith("--") and len(a) > 2 else a for a in argv]


def effective_argv(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The sysconfig variables as flanneld-start turns them into flags, then the command line."""
    head: list[str] = []
    if env.get("FLANNEL_ETCD_ENDPOINTS"):
        head.append(f"--etcd-endpoints={env['FLANNEL_ETCD_ENDPOINTS']}")
    if env.get("FLANNEL_ETCD_PREFIX"):
        head.append(f"--etcd-prefix={env['FLANNEL_ETCD_PREFIX']}")
    head += shlex.split(env.get("FLANNEL_OPTIONS", ""))
    return _normalize(head + list(argv))


def apply_env_defaults(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """FLANNELD_<FLAG> (dashes as underscores) sets a flag's default, as in flanneld."""
    for action in parser._actions:  # argparse offers no public iterator over its options
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        value = env.get(f"FLANNELD_{action.dest.upper()}")
        if value is None:
            continue
        if action.dest in ("iface", "iface_regex"):
            continue  # a list: filled in parse() only when no --iface is given (append would extend it)
        if action.type is not None:
            try:
                parser.set_defaults(**{action.dest: action.type(value)})
            except (ValueError, argparse.ArgumentTypeError):
                parser.error(f"FLANNELD_{action.dest.upper()}={value!r} is not a valid value")
        else:
            parser.set_defaults(**{action.dest: value})


def options_from(args: argparse.Namespace) -> AgentOptions:
    """The agent's options; ValueError says which flag is wrong."""
    from muslin.fabric.agent import AgentOptions
    public_ip = IPv4Address(args.public_ip) if args.public_ip else None
    if not 0 < args.subnet_lease_renew_margin < 24 * 60:  # flanneld's range: within the 24 h lease
        raise ValueError(f"--subnet-lease-renew-margin {args.subnet_lease_renew_margin} is out of range 1..1439")
    if bool(args.etcd_username) != bool(args.etcd_password):
        raise ValueError("--etcd-username and --etcd-password must be given together")
    return AgentOptions(
        endpoints=parse_endpoints(args.etcd_endpoints), prefix=args.etcd_prefix, etcd_api=args.etcd_api,
        tls=TlsFiles(args.etcd_cafile or None, args.etcd_certfile or None, args.etcd_keyfile or None),
        auth=Credentials(args.etcd_username, args.etcd_password),
        ifaces=[i for spec in args.iface for i in spec.split(",") if i], iface_regexes=list(args.iface_regex),
        public_ip=public_ip, iface_can_reach=IPv4Address(args.iface_can_reach) if args.iface_can_reach else None,
        subnet_file=args.subnet_file, docker_opts_file=args.docker_opts_file or None,
        renew_margin_minutes=args.subnet_lease_renew_margin, lease_ttl=args.subnet_lease_ttl,
        ip_masq=args.ip_masq, iptables_resync=args.iptables_resync, forward_rules=args.iptables_forward_rules,
        healthz_ip=args.healthz_ip, healthz_port=args.healthz_port, bird_dir=args.bird_dir or None)


def parse(argv: Sequence[str], env: Mapping[str, str]) -> argparse.Namespace:
    parser = build_parser()
    apply_env_defaults(parser, env)
    args = parser.parse_args(effective_argv(argv, env))
    if args.iface is None:
        args.iface = [v for v in env.get("FLANNELD_IFACE", "").split(",") if v]
    if args.iface_regex is None:
        args.iface_regex = [v for v in env.get("FLANNELD_IFACE_REGEX", "").split(",") if v]
    return args


async def _run(options: AgentOptions) -> int:
    from muslin.fabric.agent import Agent, AgentError
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agent = Agent(options)
    try:
        await agent.run(stop)
    except AgentError as exc:
        log.error("%s", exc)
        return 1
    except asyncio.CancelledError:
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv, os.environ)
    if args.version:
        print(f"muslin-flanneld {VERSION}")
        return 0
    pyroute2_lean.install()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pyroute2", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        options = options_from(args)
    except ValueError as exc:
        print(f"muslin-flanneld: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run(options))


if __name__ == "__main__":
    sys.exit(main())
