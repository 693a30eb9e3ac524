"""muslin-flanneld loads pyroute2 without its package __init__: the agent's whole import graph must work so,
and none of what the __init__ would have dragged in may come back through a side door."""

from __future__ import annotations

import subprocess
import sys

AGENT_IMPORTS = """
import sys
from muslin.kernel import pyroute2_lean
pyroute2_lean.install()
import muslin.fabric.cli, muslin.fabric.agent
from muslin.fabric.backends import vxlan, hostgw, udp
from pyroute2 import IPRoute
assert IPRoute.__module__ == "pyroute2.iproute.linux", IPRoute.__module__
heavy = sorted(m for m in sys.modules if m.startswith(("pyroute2.ndb", "pyroute2.ipdb", "pyroute2.netlink.nfnetlink",
                                                        "muslin.fabric.bird", "grpc", "aetcd")))
assert not heavy, heavy
import pyroute2
try:
    pyroute2.NDB
except AttributeError as exc:  # what ``from pyroute2 import NDB`` turns into an ImportError
    assert "add it to EXPORTS" in str(exc), exc
else:
    raise AssertionError("NDB was served")
print("lean ok")
"""


def test_the_agent_imports_with_pyroute2_lean_and_nothing_heavy_comes_along() -> None:
    proc = subprocess.run([sys.executable, "-c", AGENT_IMPORTS], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "lean ok" in proc.stdout, proc.stderr


def test_install_leaves_an_already_imported_pyroute2_alone() -> None:
    proc = subprocess.run([sys.executable, "-c", "import pyroute2\nfrom muslin.kernel import pyroute2_lean\n"
                           "pyroute2_lean.install()\nfrom pyroute2 import NDB\nprint('full ok')"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "full ok" in proc.stdout, proc.stderr
