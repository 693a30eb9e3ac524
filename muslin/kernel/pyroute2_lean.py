"""pyroute2 without its package ``__init__``, for processes that use a handful of its modules.

``import pyroute2`` (and so any ``from pyroute2.x import y``) runs the package's ``__init__``, which
imports every part of pyroute2: IPDB, NDB and its SQL schema, nftables, IPVS, wireless, WireGuard,
plan9... In the overlay agent that was 6 MB of its 40 MB and a tenth of its start-up, for one IPRoute.
``install()`` registers the package as an empty module with pyroute2's search path, so submodules load
on demand, and serves the package-level names muslin uses from the modules that define them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# The package-level names muslin imports (``from pyroute2 import IPRoute``), by the module defining them.
EXPORTS = {"IPRoute": "pyroute2.iproute.linux"}


def _package_attribute(name: str) -> object:
    module = EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"pyroute2 was loaded without its package __init__ (muslin.kernel.pyroute2_lean): "
                             f"{name!r} is not among the names it serves; add it to EXPORTS")
    return getattr(importlib.import_module(module), name)


def install() -> None:
    """Call before anything imports pyroute2 (no effect once it was imported): only for a whole process
    that keeps to EXPORTS, such as muslin-flanneld; a library must not decide this for its importer."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None:
        return  # not installed: the import that needs it fails as usual
    package = importlib.util.module_from_spec(spec)  # the package's attributes, not its code
    package.__getattr__ = _package_attribute  # type: ignore[method-assign]
    sys.modules["pyroute2"] = package
