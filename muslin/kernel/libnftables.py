"""nf_tables through libnftables, in process (ctypes over Debian's libnftables1).

Why the library rather than ``nft -f -`` or hand-built netlink: a change of muslind's nftables backend
is a few set elements, and the library turns ``nft`` syntax into one nf_tables transaction in about a
millisecond, where starting ``nft`` costs several, and its context keeps its netlink socket open (a
process that exits closes its socket after deletions, which waits for an RCU grace period, see
``nfhandles``). Hand-built messages would need nf_tables' expression encoding for every rule; the
library already has it, and speaks the same syntax that ``nft list ruleset`` shows the user.
Debian's ``python3-nftables`` is the same few ctypes calls, but lives outside the virtualenv.

A context's socket belongs to the network namespace of the thread that creates it, and a context is
not safe to share between threads: one caller at a time.
"""

from __future__ import annotations

import ctypes
import json
from typing import Any

LIBRARY = "libnftables.so.1"
NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_JSON = 1 << 4


class NftError(RuntimeError):
    """nft refused a command (syntax, a missing object, the kernel's error); nothing was changed."""


class Unavailable(NftError):
    """libnftables is not installed (it comes with the nftables package) or nf_tables is missing."""


_library: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _library
    if _library is None:
        try:
            lib = ctypes.CDLL(LIBRARY)
        except OSError as exc:
            raise Unavailable(f"{LIBRARY} cannot be loaded ({exc}): install libnftables1 (setup.sh does)") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _library = lib
    return _library


def available() -> bool:
    try:
        _load()
    except Unavailable:
        return False
    return True


class Nft:
    """One libnftables context. ``run`` applies a script (any number of commands) as one transaction:
    the kernel takes all of it or none."""

    def __init__(self) -> None:
        self._lib = _load()
        self._ctx: int | None = None

    def _context(self) -> int:
        if self._ctx is None:
            ctx = self._lib.nft_ctx_new(NFT_CTX_DEFAULT)
            if not ctx:
                raise Unavailable("nft_ctx_new failed")
            self._lib.nft_ctx_buffer_output(ctx)
            self._lib.nft_ctx_buffer_error(ctx)
            self._ctx = ctx
        return self._ctx

    def run(self, script: str) -> str:
        """Run ``script``; its output (listings) as text. Raises NftError with nft's message."""
        return self._run(script, json_output=False)

    def run_json(self, command: str) -> dict[str, Any]:
        """Run a listing command; its output as nft's JSON."""
        out = self._run(command, json_output=True)
        return json.loads(out) if out.strip() else {"nftables": []}

    def _run(self, script: str, json_output: bool) -> str:
        ctx = self._context()
        flags = self._lib.nft_ctx_output_get_flags(ctx)
        wanted = flags | NFT_CTX_OUTPUT_JSON if json_output else flags & ~NFT_CTX_OUTPUT_JSON
        if wanted != flags:
            self._lib.nft_ctx_output_set_flags(ctx, wanted)
        code = self._lib.nft_run_cmd_from_buffer(ctx, script.encode())
        out = (self._lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (self._lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        if code != 0:
            raise NftError(err.strip() or f"nft failed ({code})")
        return out

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


def delete_table(family: str, name: str) -> bool:
    """Delete the table with everything in it, if it exists (one transaction); whether it did. Where
    nf_tables cannot be asked (a kernel without it), there is no table to delete."""
    nft = Nft()
    try:
        try:
            tables = nft.run(f"list tables {family}")
        except NftError:
            return False
        if f"table {family} {name}\n" not in tables + "\n":
            return False
        nft.run(f"delete table {family} {name}")
        return True
    finally:
        nft.close()
