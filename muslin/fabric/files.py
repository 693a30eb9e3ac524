"""The files other programs read: flannel's subnet.env and the docker options mk-docker-opts.sh writes.

Both are written to a temporary file in the same directory and renamed over the old one, so a reader
(muslind, a systemd unit) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DOCKER_OPTS_NAME = "docker"  # the seed's RPM setup keeps it next to subnet.env: /run/flannel/docker


@dataclass(frozen=True)
class SubnetEnv:
    network: IPv4Network
    subnet: IPv4Interface  # the lease's first address with its prefix: what docker0 takes (--bip)
    mtu: int
    ipmasq: bool

    def render(self) -> str:
        return (f"FLANNEL_NETWORK={self.network}\n"
                f"FLANNEL_SUBNET={self.subnet}\n"
                f"FLANNEL_MTU={self.mtu}\n"
                f"FLANNEL_IPMASQ={'true' if self.ipmasq else 'false'}\n")

    def docker_options(self) -> dict[str, str]:
        """mk-docker-opts.sh's variables. IPMASQ is inverted: when flannel masquerades, docker must not."""
        bip = f"--bip={self.subnet}"
        masq = f"--ip-masq={'false' if self.ipmasq else 'true'}"
        mtu = f"--mtu={self.mtu}"
        return {
            "DOCKER_OPT_BIP": bip,
            "DOCKER_OPT_IPMASQ": masq,
            "DOCKER_OPT_MTU": mtu,
            "DOCKER_NETWORK_OPTIONS": f" {bip} {masq} {mtu}",
        }

    def render_docker_options(self) -> str:
        return "".join(f'{key}="{value}"\n' for key, value in self.docker_options().items())


def write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def docker_opts_path_for(subnet_file: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(subnet_file)), DOCKER_OPTS_NAME)


def write_subnet_files(env: SubnetEnv, subnet_file: str, docker_opts_file: str | None) -> None:
    # The subnet file last: whoever waits for it (a unit's ExecStartPost, muslind) finds both files there.
    if docker_opts_file:
        write_atomically(docker_opts_file, env.render_docker_options())
    write_atomically(subnet_file, env.render())


def read_subnet_env(path: str) -> dict[str, str]:
    """Variables of a subnet.env or docker options file (shell ``KEY=value`` lines, quotes allowed).

    Raises FileNotFoundError when the file is missing and ValueError naming the line when one is not
    an assignment.
    """
    result: dict[str, str] = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            key, sep, value = stripped.partition("=")
            if not sep or not key.replace("_", "").isalnum():
                raise ValueError(f"{path}:{number}: not a KEY=value line: {stripped!r}")
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                # Keep the exact content between quotes (DOCKER_NETWORK_OPTIONS starts with a space).
                value = value[1:-1]
            result[key] = value
    return result


def parse_subnet_env(values: dict[str, str]) -> SubnetEnv:
    """A SubnetEnv from read_subnet_env's dict; ValueError names the missing or bad variable."""
    try:
        return SubnetEnv(network=IPv4Network(values["FLANNEL_NETWORK"]),
                         subnet=IPv4Interface(values["FLANNEL_SUBNET"]),
                         mtu=int(values["FLANNEL_MTU"]),
                         ipmasq=values.get("FLANNEL_IPMASQ", "false").lower() == "true")
    except KeyError as exc:
        raise ValueError(f"subnet file lacks {exc.args[0]}") from None
