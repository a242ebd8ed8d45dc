"""A SHA-256 whose state can be saved and restored: hashing a file uploaded in many requests.

A resumable upload arrives in several requests, possibly to several processes, across
restarts; its sha256 is computed as the bytes arrive, so its state must be stored between
requests. hashlib objects cannot be serialised, so this uses OpenSSL's SHA-256 (the same
library hashlib uses) through its ``SHA256_CTX`` API, whose context is a plain struct.
"""

import ctypes
import ctypes.util
import hashlib


#: sizeof(SHA256_CTX): h[8], Nl, Nh, data[16], num, md_len, all 32-bit words.
CONTEXT_SIZE = 112
#: Tag stored with the state, so that a state from another implementation is never misread.
STATE_VERSION = b"openssl-sha256-ctx:1:"


def _load_libcrypto():
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


_crypto = _load_libcrypto()


class ResumableSha256:
    def __init__(self, state=None):
        self._context = ctypes.create_string_buffer(CONTEXT_SIZE)
        if state is None:
            _crypto.SHA256_Init(self._context)
        else:
            if not state.startswith(STATE_VERSION) or len(state) != len(STATE_VERSION) + 112:
                raise ValueError("not a saved SHA-256 state")
            ctypes.memmove(self._context, state[len(STATE_VERSION) :], CONTEXT_SIZE)

    def update(self, data):
        # ctypes passes a bytes object without copying it; other buffers are copied once.
        data = data if isinstance(data, bytes) else bytes(data)
        _crypto.SHA256_Update(self._context, data, len(data))

    def state(self):
        """Bytes to save; ``ResumableSha256(state)`` goes on from there."""
        return STATE_VERSION + self._context.raw

    def hexdigest(self):
        copy = ctypes.create_string_buffer(self._context.raw, CONTEXT_SIZE)
        digest = ctypes.create_string_buffer(hashlib.sha256().digest_size)
        _crypto.SHA256_Final(digest, copy)
        return digest.raw.hex()
