"""Where a request comes from (:mod:`kinto_attachment.web.client_address`): the peer, or the client
trusted proxies name; and what counts as one client for the anonymous tus quota."""

import ipaddress

import pytest
import webob

from kinto_attachment.web.client_address import client_address, client_name


PROXIES = (ipaddress.ip_network("10.0.0.0/24"),)


def address_of(remote, forwarded=None):
    environ = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_address(webob.Request.blank("/", environ=environ), PROXIES)


@pytest.mark.parametrize(
    "remote,forwarded,expected",
    [
        ("192.0.2.1", None, "192.0.2.1"),
        ("192.0.2.1:4711", None, "192.0.2.1"),
        ("[2001:db8::1]:443", None, "2001:db8::1"),
        ("::ffff:192.0.2.1", None, "192.0.2.1"),  # A dual-stack socket's IPv4 peer.
        ("unix:/run/kinto.sock", None, None),
        ("192.0.2.1", "203.0.113.9", "192.0.2.1"),  # Not a proxy: not believed.
        ("10.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.1", "198.51.100.1, 203.0.113.9, 10.0.0.2", "203.0.113.9"),
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),  # Proxies all the way.
        ("10.0.0.1", "garbage", None),
    ],
)
def test_client_address(remote, forwarded, expected):
    address = address_of(remote, forwarded)
    assert (None if address is None else str(address)) == expected


def test_one_client_is_an_ipv4_address_or_an_ipv6_hosts_network():
    assert client_name(ipaddress.ip_address("192.0.2.1")) == "192.0.2.1"
    assert client_name(ipaddress.ip_address("2001:db8:1:2:3::4")) == "2001:db8:1:2::/64"
    assert client_name(None) == "unknown"
