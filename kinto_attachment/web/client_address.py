"""Where a request comes from: the WSGI server's peer, or the client trusted proxies name.

``/data/files`` trusts callers by it (:mod:`~kinto_attachment.data_files.visibility`), and
anonymous resumable uploads are counted by it (:mod:`~kinto_attachment.views.resumable`).
Behind a reverse proxy every request comes from the proxy: the client is the one the trusted
proxies (``data_files.trusted_proxies``) vouch for in ``X-Forwarded-For``, never what the
client says of itself. A server that resolves it itself (waitress's ``trusted_proxy``) sets
``REMOTE_ADDR`` to it.
"""

import ipaddress


#: An IPv6 host is given a /64 network (RFC 6177) and picks addresses in it at will.
IPV6_HOST_PREFIX = 64


def client_address(request, trusted_proxies):
    """The WSGI server's peer, or what trusted proxies say of the client before them; None
    when it is no IP address (a Unix socket).

    ``X-Forwarded-For`` is only read when the peer is one of ``trusted_proxies``, and then from
    the right: each proxy appends the address it received from, so the right-most entry that
    is not itself a trusted proxy is the first one that no trusted party vouches for.
    """
    address = _parse_address(request.environ.get("REMOTE_ADDR", ""))
    forwarded = request.environ.get("HTTP_X_FORWARDED_FOR", "")
    if address is None or not forwarded or not in_networks(address, trusted_proxies):
        return address
    for entry in reversed(forwarded.split(",")):
        address = _parse_address(entry)
        if address is None or not in_networks(address, trusted_proxies):
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


def in_networks(address, networks):
    return any(address in net for net in networks)


def client_name(address):
    """What counts as one client: an IPv4 address, an IPv6 host's /64, or ``unknown``."""
    if address is None:
        return "unknown"
    if address.version == 6:
        return str(ipaddress.ip_network((address, IPV6_HOST_PREFIX), strict=False))
    return str(address)
