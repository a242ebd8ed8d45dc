"""A SHA-256 whose state can be saved and restored: hashing a file uploaded in many requests.

A resumable upload arrives in several requests, possibly to several processes, across
restarts; its sha256 is computed as the bytes arrive, so its state must be stored between
requests. hashlib objects cannot be serialised, so this uses OpenSSL's SHA-256 (the same
library hashlib uses) through its ``SHA256_CTX`` API, whose context is a plain struct.

Only resumable (tus) uploads need this. libcrypto is therefore looked up on first use, not at
import: a libcrypto without ``SHA256_Init`` only disables resumable uploads.

The context is never copied blindly: it is unpacked field by field from the library's native
layout, checked, and saved in a fixed little-endian layout (the bytes every server has saved so
far, all of them little-endian), so that a state is read the same way by any server.
"""

import ctypes
import ctypes.util
import hashlib
import struct
import threading


#: ``SHA256_CTX``: h[8], Nl, Nh (the bit count), data[64] (the pending block), num (its
#: length), md_len: 32-bit words except the block, which OpenSSL fills byte by byte.
_FIELDS = "8I2I64s2I"
_NATIVE = struct.Struct("=" + _FIELDS)
#: How a state is saved, whatever the byte order of the server.
_SAVED = struct.Struct("<" + _FIELDS)
CONTEXT_SIZE = _NATIVE.size  # 112
BLOCK_SIZE = 64
DIGEST_SIZE = hashlib.sha256().digest_size
#: SHA-256's initial hash value (FIPS 180-4 §5.3.3): what ``SHA256_Init`` must write.
_INITIAL_H = (
    0x6A09E667,
    0xBB67AE85,
    0x3C6EF372,
    0xA54FF53A,
    0x510E527F,
    0x9B05688C,
    0x1F83D9AB,
    0x5BE0CD19,
)
#: Tag stored with the state, so that a state from another implementation is never misread.
STATE_VERSION = b"openssl-sha256-ctx:1:"


class InvalidState(ValueError):
    """A saved state that is not one this module saved (truncated, altered, or foreign)."""


_library = None
_library_lock = threading.Lock()


def _find_libcrypto():
    import _hashlib  # Make sure the libcrypto hashlib uses is the one loaded.

    for name in (
        getattr(_hashlib, "__file__", None),
        ctypes.util.find_library("crypto"),
        "libcrypto.so.3",
    ):
        if not name:
            continue
        try:
            library = ctypes.CDLL(name)
            library.SHA256_Init  # noqa: B018 (raises AttributeError when absent)
        except (OSError, AttributeError):
            continue
        for function in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
            getattr(library, function).restype = ctypes.c_int
        library.SHA256_Update.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t)
        return library
    raise ImportError("OpenSSL's libcrypto (SHA256_Init) was not found")


def _check_layout(library):
    """Make sure the library's ``SHA256_CTX`` is the struct we pack: same size, same order.

    ``SHA256_Init`` clears the whole context and sets its initial words: in a larger buffer
    full of a marker, it must leave the marker after our size, and the words where we read them.
    """
    probe = ctypes.create_string_buffer(b"\xa5" * (2 * CONTEXT_SIZE), 2 * CONTEXT_SIZE)
    library.SHA256_Init(probe)
    *h, low, high, _, num, md_len = _NATIVE.unpack_from(probe.raw)
    initial = (tuple(h), low, high, num, md_len) == (_INITIAL_H, 0, 0, 0, DIGEST_SIZE)
    if not initial or probe.raw[CONTEXT_SIZE:] != b"\xa5" * CONTEXT_SIZE:
        raise ImportError(f"OpenSSL's SHA256_CTX is not the {CONTEXT_SIZE}-byte struct expected")


def _crypto():
    """libcrypto, found and checked on first use."""
    global _library
    if _library is None:
        with _library_lock:
            if _library is None:
                library = _find_libcrypto()
                _check_layout(library)
                _library = library
    return _library


def _fields(context):
    """A context's fields, checked: the bit count must be whole bytes whose remainder past
    the last whole block is what the pending block holds."""
    *h, low, high, block, num, md_len = context
    bits = high << 32 | low
    if md_len != DIGEST_SIZE or num >= BLOCK_SIZE or bits % 8 or bits // 8 % BLOCK_SIZE != num:
        raise InvalidState(
            f"not a SHA-256 state (digest size {md_len}, {num} bytes pending, {bits} bits)"
        )
    # Bytes past the pending ones are meaningless: keep them zero so that a state is canonical.
    return (*h, low, high, block[:num].ljust(BLOCK_SIZE, b"\0"), num, md_len)


class ResumableSha256:
    def __init__(self, state=None):
        self._context = ctypes.create_string_buffer(CONTEXT_SIZE)
        if state is None:
            _crypto().SHA256_Init(self._context)
            return
        state = bytes(state)
        if not state.startswith(STATE_VERSION) or len(state) != len(STATE_VERSION) + _SAVED.size:
            raise InvalidState("not a saved SHA-256 state")
        fields = _fields(_SAVED.unpack_from(state, len(STATE_VERSION)))
        _crypto()  # The library checks the layout we are about to write into.
        _NATIVE.pack_into(self._context, 0, *fields)

    def update(self, data):
        # ctypes passes a bytes object, and a writable buffer (a reused ``bytearray``),
        # without copying it; other buffers are copied once.
        if not isinstance(data, bytes):
            view = memoryview(data).cast("B")
            data = bytes(view) if view.readonly else (ctypes.c_char * len(view)).from_buffer(view)
        _crypto().SHA256_Update(self._context, data, len(data))

    def state(self):
        """Bytes to save; ``ResumableSha256(state)`` goes on from there."""
        return STATE_VERSION + _SAVED.pack(*_fields(_NATIVE.unpack(self._context.raw)))

    def hexdigest(self):
        copy = ctypes.create_string_buffer(self._context.raw, CONTEXT_SIZE)
        digest = ctypes.create_string_buffer(DIGEST_SIZE)
        _crypto().SHA256_Final(digest, copy)
        return digest.raw.hex()
