"""Runs a pytest selection of this repository inside a User-Mode Linux guest: for what this machine's kernel
cannot do (IPsec ESP, AES-GCM), on Debian's UML kernel, which has them as modules.

    .venv/bin/python tests/uml_pytest.py tests/overlay/test_encrypted.py -k esp_beside

The guest is a process of this machine, in a scratch network namespace, with no network device to the
outside; its root is this machine's own files read-only (so the same muslind, etcd, runc and docker CLI
run in it), its /tmp, /run and /mnt are its own tmpfs (uml_guest/pytest_init.sh). Every container, etcd
and namespace the tests make lives and dies inside the guest. Slow (the guest's syscalls are trapped):
the encrypted overlay's two-engine test takes about 4 minutes, so it is not part of the suite; the
guest's console goes to stdout and the exit status is pytest's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muslin.kernel import netns  # noqa: E402
from tests.tools import require  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INIT = REPO / "tests" / "integration" / "uml_guest" / "pytest_init.sh"
LIMIT = 1800  # seconds for the whole guest, boot to power-off
EXIT_MARK = "UML-PYTEST-EXIT "


def main(pytest_args: list[str]) -> int:
    ns = f"mu-{uuid.uuid4().hex[:8]}"
    netns.create(ns)
    try:
        with tempfile.TemporaryDirectory(prefix="muslin-uml-") as scratch:
            args_file = Path(scratch) / "pytest-args"
            args_file.write_text("\n".join(["-q", *pytest_args]) + "\n")
            os.chmod(scratch, 0o755)
            status = 1
            with subprocess.Popen(
                    ["nsenter", f"--net={netns.path_for(ns)}", require("linux.uml"), "mem=2048M",
                     f"uml_dir={scratch}", "rootfstype=hostfs", "rootflags=/", "ro", f"init={INIT}", "con0=fd:0,fd:1",
                     "con=null", f"MUSLIN_PYTHON={sys.executable}", f"MUSLIN_REPO={REPO}",
                     f"MUSLIN_ARGS_FILE={args_file}"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as guest:
                assert guest.stdout is not None
                deadline = threading.Timer(LIMIT, guest.kill)  # the console ends when the guest does
                deadline.start()
                try:
                    for line in guest.stdout:
                        sys.stdout.write(line)
                        if line.startswith(EXIT_MARK):
                            status = int(line.removeprefix(EXIT_MARK))
                    guest.wait()
                finally:
                    deadline.cancel()
                    guest.kill()
            return status
    finally:
        netns.remove(ns)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
