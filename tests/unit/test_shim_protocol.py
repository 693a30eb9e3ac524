"""The frames and requests muslind and a shim exchange: round trips, and bytes that arrive in pieces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from muslin.runtime.shim import protocol
from muslin.runtime.shim.protocol import (ERROR, EXIT, HEADER, REPLY, REQUEST_MAX, STDERR, STDOUT, FrameDecoder,
                                          ProtocolError, RequestReader, RequestTooLong, decode_header, encode_frame,
                                          encode_json_frame, encode_request)


def test_a_frame_is_kind_length_and_payload() -> None:
    assert encode_frame(STDOUT, b"hi") == b"\x01\x00\x00\x00\x02hi"
    assert decode_header(encode_frame(STDERR, b"x" * 70000)[:HEADER.size]) == (STDERR, 70000)


def test_frames_round_trip_in_one_piece() -> None:
    sent = [(STDOUT, b"out\n"), (STDERR, b""), (STDOUT, bytes(range(256)) * 300), (EXIT, b'{"exit_code": 7}'),
            (REPLY, b"{}")]
    decoder = FrameDecoder()
    assert decoder.feed(b"".join(encode_frame(kind, payload) for kind, payload in sent)) == sent
    assert decoder.pending == 0


def test_frames_split_anywhere_come_out_whole_and_in_order() -> None:
    sent = [(STDOUT, b"a" * 5), (STDERR, b"bb"), (EXIT, b'{"exit_code": 0}')]
    wire = b"".join(encode_frame(kind, payload) for kind, payload in sent)
    for size in (1, 2, 3, 4, 5, 6, 7, 11, 13):
        decoder = FrameDecoder()
        got = []
        for at in range(0, len(wire), size):
            got += decoder.feed(wire[at : at + size])
        assert got == sent, size
        assert decoder.pending == 0


def test_a_partial_frame_waits_for_the_rest() -> None:
    decoder = FrameDecoder()
    wire = encode_frame(STDOUT, b"hello")
    assert decoder.feed(wire[:3]) == []  # not even a whole header
    assert decoder.feed(wire[3:7]) == []  # header, part of the payload
    assert decoder.pending == 7
    assert decoder.feed(wire[7:] + wire[:2]) == [(STDOUT, b"hello")]  # and the start of the next
    assert decoder.pending == 2


def test_json_frames_decode_to_what_was_sent() -> None:
    ((kind, payload),) = FrameDecoder().feed(encode_json_frame(ERROR, {"message": "container is exited"}))
    assert kind == ERROR and json.loads(payload) == {"message": "container is exited"}


def test_a_request_line_is_read_in_pieces_and_what_follows_is_stdin() -> None:
    wire = encode_request({"op": "attach", "stdin": True, "stdout": True}) + b"typed ahead"
    reader = RequestReader()
    for byte in wire[: wire.index(b"\n")]:
        assert reader.feed(bytes([byte])) is None
    request, rest = reader.feed(wire[wire.index(b"\n"):])
    assert request == {"op": "attach", "stdin": True, "stdout": True}
    assert rest == b"typed ahead"


def test_a_request_that_is_not_a_json_object_is_refused() -> None:
    for line in (b"not json\n", b"[1, 2]\n", b"\n"):
        with pytest.raises(ProtocolError, match="bad request"):
            RequestReader().feed(line)


def test_a_request_line_without_an_end_is_cut_off_at_the_limit() -> None:
    reader = RequestReader()
    assert reader.feed(b"{" + b" " * (REQUEST_MAX - 1)) is None
    with pytest.raises(RequestTooLong):
        reader.feed(b"  ")


def test_an_exec_request_near_the_limit_still_passes() -> None:
    process = {"args": ["sh", "-c", "x" * (REQUEST_MAX - 200)], "env": [], "cwd": "/"}
    wire = encode_request({"op": "exec", "exec_id": "e1", "process": process})
    assert len(wire) < REQUEST_MAX
    request, rest = RequestReader().feed(wire)
    assert request["process"] == process and rest == b""


def test_the_shim_package_imports_with_the_standard_library_alone() -> None:
    # As the shim process runs: python3 -I -S, no site-packages, the package importable as `shim`.
    parent = str(Path(protocol.__file__).resolve().parent.parent)
    script = ("import sys; sys.path.append(%r); import shim.spawner, json; "
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('muslin', 'shim')))))" % parent)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    loaded = json.loads(out)
    assert "shim.spawner" in loaded and not [m for m in loaded if m.startswith("muslin")]
