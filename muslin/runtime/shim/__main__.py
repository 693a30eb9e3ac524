"""``python3 -I -S <the shim package's directory> STATE_ROOT [PIN_DIR...]``: the shim spawner (see the package)."""

import os
import sys

if __name__ == "__main__":
    # Run as a directory, the package itself is sys.path[0]. Its parent goes last instead, so the
    # package imports as ``shim`` and nothing there can shadow the standard library.
    sys.path.append(os.path.dirname(sys.path.pop(0)))
    from shim.spawner import serve_spawner

    serve_spawner()
