"""Who may see ``/data/files``: trusted networks, configured principals, or everyone.

The route is private by default. Whoever may not see it gets the 404 of an unknown route,
before anything is read or written. Behind a reverse proxy, the client's address is the one
the trusted proxies vouch for (``X-Forwarded-For``), never what the client says of itself.
"""

import ipaddress

from .. import errors
from ..state import records


def _client_address(request, options):
    """The WSGI server's peer, or what trusted proxies say of the client before them.

    ``X-Forwarded-For`` is only read when the peer is one of ``trusted_proxies``, and then from
    the right: each proxy appends the address it received from, so the right-most entry that
    is not itself a trusted proxy is the first one that no trusted party vouches for.
    """
    address = _parse_address(request.environ.get("REMOTE_ADDR", ""))
    forwarded = request.environ.get("HTTP_X_FORWARDED_FOR", "")
    if address is None or not forwarded or not _in(address, options.trusted_proxies):
        return address
    for entry in reversed(forwarded.split(",")):
        address = _parse_address(entry)
        if address is None or not _in(address, options.trusted_proxies):
            return address
    return address  # Proxies all the way: the left-most one.


def _parse_address(text):
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:port"
        text = text.split(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4-mapped IPv6 peer (dual-stack sockets) is its IPv4 address.
    return getattr(address, "ipv4_mapped", None) or address


def _in(address, networks):
    return any(address in net for net in networks)


def require_visible(request):
    """404, as for an unknown route, unless the caller may see the files.

    Never through ``POST /batch``: a sub-request would carry headers of its own choosing, and
    its writes would outlive a failed batch. Checked before anything is read or written.
    """
    if records.in_batch(request):
        raise errors.refuse("hidden")
    options = request.registry.attachment_settings.data_files
    if options.visibility == "public":
        return
    address = _client_address(request, options)
    if address is not None and _in(address, options.trusted_networks):
        return
    if options.principals & set(request.prefixed_principals):
        return
    raise errors.refuse("hidden")
