"""Local security as Docker's: the data root is root's alone, the socket belongs to root and -G's group,
and tcp is served only with TLS client verification, which the real docker CLI speaks."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
from pathlib import Path

import pytest

from muslin.kernel import netns

from ..tools import require
from .conftest import MUSLIND

pytestmark = pytest.mark.root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([require("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", *cmd],
                          capture_output=True, text=True)


def test_data_root_is_roots_alone_also_after_an_older_version(daemon_factory) -> None:
    daemon = daemon_factory()
    data, database = daemon.root / "data", daemon.root / "data" / "muslin.db"
    daemon.docker("run", "-d", "--name", "secret", "-e", "PASSWORD=hunter2", "busybox", "sleep", "60")
    assert (mode(data), mode(database), mode(daemon.root / "run")) == (0o710, 0o600, 0o700)
    denied = as_nobody("cat", str(database))
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    # A root left open by an older version is closed at the next start.
    daemon.stop()
    data.chmod(0o755)
    database.chmod(0o644)
    daemon.start()
    assert (mode(data), mode(database)) == (0o710, 0o600)
    daemon.docker("rm", "-f", "secret")


def test_socket_group_is_docker_by_default_and_g_sets_it(daemon_factory) -> None:
    default = daemon_factory()
    sock = Path(default.sock).stat()
    try:
        expected = grp.getgrnam("docker").gr_gid
    except KeyError:
        expected = 0
    assert (stat.S_IMODE(sock.st_mode), sock.st_uid, sock.st_gid) == (0o660, 0, expected)
    assert as_nobody(require("docker"), "-H", f"unix://{default.sock}", "version").returncode != 0
    other = daemon_factory("-G", "daemon")
    assert Path(other.sock).stat().st_gid == grp.getgrnam("daemon").gr_gid
    by_number = daemon_factory("--group", "65534")
    assert Path(by_number.sock).stat().st_gid == 65534
    with pytest.raises(RuntimeError, match="-G 'no-such-group': no such group"):
        daemon_factory("-G", "no-such-group")


@pytest.mark.parametrize("flags, message", [
    (["-H", "tcp://127.0.0.1:2375"], "refusing to serve tcp://127.0.0.1:2375 without TLS client verification"),
    (["-H", "tcp://127.0.0.1:2376", "--tls"], "refusing to serve tcp://127.0.0.1:2376 without TLS"),
    (["-H", "tcp://127.0.0.1:2376", "--tlsverify", "--tlscacert", "/nonexistent/ca.pem"],
     "--tlscacert /nonexistent/ca.pem: no such file"),
    (["-H", "tcp://example:2376"], "invalid -H 'tcp://example:2376'"),
])
def test_plain_tcp_and_bad_tls_flags_are_refused_before_anything_is_set_up(host_ns, tmp_path, flags,
                                                                           message) -> None:
    refused = subprocess.run(["nsenter", f"--net={netns.path_for(host_ns)}", MUSLIND, "--data-root",
                              str(tmp_path / "data"), "--exec-root", str(tmp_path / "run"), *flags],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1, a client certificate it signed, and a client certificate
    of another CA; the client files are named as the docker CLI expects them in DOCKER_CERT_PATH."""
    openssl = require("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    def signed(name: str, ca: str, extensions: str) -> None:
        run("req", *ec, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (directory / f"{name}.ext").write_text(extensions)
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")

    for ca in ("ca", "other-ca"):
        run("req", "-x509", *ec, "-keyout", f"{ca}-key.pem", "-out", f"{ca}.pem", "-days", "1", "-subj", f"/CN={ca}")
    signed("server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    signed("client", "ca", "extendedKeyUsage=clientAuth\n")
    signed("stranger", "other-ca", "extendedKeyUsage=clientAuth\n")
    clients = {}
    for name in ("client", "stranger"):
        cert_path = directory / f"{name}-certs"
        cert_path.mkdir()
        (cert_path / "ca.pem").write_bytes((directory / "ca.pem").read_bytes())
        (cert_path / "cert.pem").write_bytes((directory / f"{name}.pem").read_bytes())
        (cert_path / "key.pem").write_bytes((directory / f"{name}-key.pem").read_bytes())
        clients[name] = cert_path
    return {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server-key.pem",
            **clients}


def test_real_docker_cli_over_tls_with_client_verification(daemon_factory, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    daemon = daemon_factory("-H", "tcp://127.0.0.1:2376", "--tlsverify", "--tlscacert", str(pki["ca"]),
                            "--tlscert", str(pki["cert"]), "--tlskey", str(pki["key"]))
    docker = require("docker")

    def over_tcp(cert_path: Path | None, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = "tcp://127.0.0.1:2376"
        if cert_path is not None:
            env.update(DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(cert_path))
        return subprocess.run(["nsenter", f"--net={netns.path_for(daemon.ns)}", docker, *args], env=env,
                              capture_output=True, text=True, timeout=60, input=stdin)

    version = over_tcp(pki["client"], "version", "--format", "{{.Server.APIVersion}}")
    assert version.returncode == 0 and version.stdout.strip(), version.stderr
    ran = over_tcp(pki["client"], "run", "--rm", "busybox", "echo", "over tls")  # attach: a hijacked stream
    assert ran.returncode == 0 and ran.stdout == "over tls\n", ran.stderr
    # Piped stdin: its end is the CLI's CloseWrite (close_notify), after which the output still comes.
    echoed = over_tcp(pki["client"], "run", "-i", "--rm", "busybox", "cat", stdin="through tls and back\n")
    assert echoed.returncode == 0 and echoed.stdout == "through tls and back\n", echoed.stderr
    assert over_tcp(pki["stranger"], "version").returncode != 0  # a certificate of another CA
    assert over_tcp(None, "version").returncode != 0  # no TLS at all
    # The unix socket still serves alongside, and muslind survived the refused handshakes.
    assert daemon.docker("ps", "-aq").stdout == ""
