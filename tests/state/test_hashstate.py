"""The resumable SHA-256: saved and restored at every awkward length, and checked on restore."""

import base64
import hashlib
import os
import struct
import subprocess
import sys

import pytest

from kinto_attachment.state import hashstate
from kinto_attachment.state.hashstate import InvalidState, ResumableSha256


MiB = 1024 * 1024
#: Saved by the first release (a raw copy of the context) after ``b"kinto" * 20``.
OLD_STATE = base64.b64decode(
    "b3BlbnNzbC1zaGEyNTYtY3R4OjE6u8c3cP6Zqc7cGI0ngMdR27kV+MnDFWT2IHj3EQAar8MgAwAAAAAAAG9raW50b2tpbnRv"
    "a2ludG9raW50b2tpbnRva2ludG9raW50bwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAkAAAAIAAAAA=="
)


def resumed(*chunks):
    """Hash ``chunks``, saving and restoring the state before each one and at the end."""
    sha = ResumableSha256()
    for chunk in chunks:
        sha = ResumableSha256(sha.state())
        sha.update(chunk)
    return ResumableSha256(sha.state())


@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 127, 128, 129])
def test_round_trip_at_block_edges(size):
    data = os.urandom(size + 200)
    expected = hashlib.sha256(data).hexdigest()
    assert resumed(data[:size], data[size:]).hexdigest() == expected
    assert resumed(data).hexdigest() == expected
    assert ResumableSha256(ResumableSha256().state()).hexdigest() == hashlib.sha256().hexdigest()


@pytest.mark.parametrize("split", [MiB - 65, MiB - 64, MiB - 1, MiB, MiB + 1, MiB + 63, 2 * MiB])
def test_round_trip_across_mebibytes(split):
    data = os.urandom(2 * MiB + 100)
    chunks = (data[:split], data[split : split + MiB], data[split + MiB :])
    assert resumed(*chunks).hexdigest() == hashlib.sha256(data).hexdigest()


def test_update_takes_any_buffer():
    sha = ResumableSha256()
    sha.update(bytearray(b"ab"))
    sha.update(memoryview(b"cd"))
    assert sha.hexdigest() == hashlib.sha256(b"abcd").hexdigest()
    sha.update(b"e")  # hexdigest() does not finish the hash.
    assert sha.hexdigest() == hashlib.sha256(b"abcde").hexdigest()


def test_states_saved_by_earlier_releases_are_read():
    sha = ResumableSha256(OLD_STATE)
    sha.update(b"attachment")
    assert sha.hexdigest() == hashlib.sha256(b"kinto" * 20 + b"attachment").hexdigest()
    # Saved in the same format, so that servers not yet upgraded read it as well.
    assert resumed(b"kinto" * 20).state() == OLD_STATE


def test_state_layout_is_explicit():
    state = resumed(b"x" * 70).state()[len(hashstate.STATE_VERSION) :]
    *h, low, high, block, num, md_len = struct.unpack("<8I2I64s2I", state)
    assert (low, high, num, md_len) == (70 * 8, 0, 6, 32)
    assert block == b"x" * 6 + b"\0" * 58


def tampered(offset, value):
    state = bytearray(OLD_STATE)
    struct.pack_into("<I", state, len(hashstate.STATE_VERSION) + offset, value)
    return bytes(state)


@pytest.mark.parametrize(
    "state",
    [
        b"",
        OLD_STATE[:-1],
        OLD_STATE + b"\0",
        b"openssl-sha256-ctx:2:" + OLD_STATE[21:],
        tampered(32, 100 * 8 + 1),  # A bit count that is not whole bytes.
        tampered(32, 101 * 8),  # A bit count that disagrees with the pending length.
        tampered(104, 64),  # A pending block longer than a block.
        tampered(104, 37),
        tampered(108, 28),  # A SHA-224 context.
    ],
)
def test_invalid_states_are_refused(state):
    with pytest.raises(InvalidState):
        ResumableSha256(state)
    assert issubclass(InvalidState, ValueError)


def test_libcrypto_is_only_looked_up_on_first_use():
    """Without SHA256_Init, only resumable uploads are lost: importing works."""
    code = (
        "import kinto_attachment.state.hashstate as h, kinto_attachment;"
        "assert h._library is None;"
        "h.ResumableSha256();"
        "assert h._library is not None"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_foreign_context_layout_is_refused():
    class Library:
        def SHA256_Init(self, context):  # Writes nothing where our layout expects its words.
            pass

    with pytest.raises(ImportError, match="SHA256_CTX"):
        hashstate._check_layout(Library())
