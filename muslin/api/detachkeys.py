"""Detach keys: the key sequence that ends an attach or exec session without stopping the process.

Docker's spelling (``--detach-keys``, the attach query's ``detachKeys``, exec create's ``DetachKeys``,
the client config's ``detachKeys``): comma-separated keys, each a single character, ``ctrl-@`` ...
``ctrl-_`` (ASCII 0-31) or ``DEL``. The default is ctrl-p ctrl-q.

Matching follows dockerd 20.10 (checked against it): the keys are matched byte by byte across the
client's reads, typed one by one or sent in one write; a byte that may start or continue the sequence
is held back until the sequence completes (detach: nothing of it reaches the process) or breaks (the
held bytes go on to the process).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from muslin.errors import InvalidArgument

# "ctrl-@" is 0, "ctrl-a" 1, ... "ctrl-_" 31: the control characters, named by the key pressed with ctrl.
CONTROL_KEYS = {f"ctrl-{chr(code + 64).lower()}": code for code in range(32)}
DEFAULT = bytes([CONTROL_KEYS["ctrl-p"], CONTROL_KEYS["ctrl-q"]])


def parse(spec: str) -> bytes:
    """The bytes of a detach-key spec; raises ValueError with moby/term's message."""
    codes = bytearray()
    # A key is one byte of the spec's UTF-8, as in Go: "é" is two bytes, so not a key.
    for key in spec.encode().split(b","):
        if len(key) == 1:
            codes += key
        elif key.decode() in CONTROL_KEYS:
            codes.append(CONTROL_KEYS[key.decode()])
        elif key == b"DEL":
            codes.append(127)
        else:
            raise ValueError(f"Unknown character: '{key.decode()}'")
    return bytes(codes)


def for_attach(spec: str) -> bytes:
    """The attach query's ``detachKeys`` (empty: the default), refused as dockerd refuses it."""
    if not spec:
        return DEFAULT
    try:
        return parse(spec)
    except ValueError:
        raise InvalidArgument(f"Invalid detach keys ({spec}) provided") from None


def for_exec(spec: str) -> bytes:
    """Exec create's ``DetachKeys`` (empty: the default), refused as dockerd refuses it."""
    if not spec:
        return DEFAULT
    try:
        return parse(spec)
    except ValueError:
        raise InvalidArgument(f"Invalid escape keys ({spec}) provided") from None


@dataclass
class EscapeProxy:
    """Filters the client's input; ``detached`` once the whole sequence was read."""

    keys: bytes
    matched: int = 0  # how many bytes of ``keys`` are held back
    detached: bool = field(default=False, init=False)

    def feed(self, data: bytes) -> bytes:
        """What of this read goes on to the process: held-back bytes once a match breaks, and what
        came before the sequence in a read that completes it (what follows it is the client's no more)."""
        if not self.keys or self.detached:
            return data
        out = bytearray()
        for byte in data:
            if byte != self.keys[self.matched]:
                out += self.keys[:self.matched]
                self.matched = 0
                if byte != self.keys[0]:
                    out.append(byte)
                    continue
            self.matched += 1
            if self.matched == len(self.keys):
                self.detached = True
                break
        return bytes(out)
