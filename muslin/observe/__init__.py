"""Seeing a live container network: its topology (``topology``), drawings of it (``render_*``), and the
path a real probe takes through it (``trace``). Reads the kernel through ``muslin.kernel`` and engines
through their Docker API only."""
