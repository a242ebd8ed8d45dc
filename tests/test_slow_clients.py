"""Each shipped server configuration, started as the README starts it, keeps answering a
well-behaved client within 2 s while 200 idle connections and 20 slow clients are open (partial
request heads, upload bodies that stop, heads and bodies sent a byte every 10 s), and ends
each stalled request after its documented time (README.rst, "Security").

waitress runs ``config/kinto.ini`` as shipped (only its address and files folder differ, as in
every live test): its ``channel_timeout`` is the time waited. gunicorn and uWSGI run their
shipped files with ``KINTO_STALL_TIMEOUT`` (the setting both read) at 15 s, to wait less: still
longer than a trickle's 10 s between bytes, which must not be cut. nginx in front of each:
``tests/test_nginx_slow_clients.py``.
"""

import configparser

import pytest
from waitress.adjustments import Adjustments

from .live import ROOT, create_collection, running_server
from .slow_clients import ANSWER_WITHIN, withstand


pytestmark = pytest.mark.live

#: KINTO_STALL_TIMEOUT of the streaming servers here (their shipped default is 30).
STREAMING_STALL = 15
#: Seconds past the stall timeout within which a stalled request must have ended.
SLACK = 5
WAITRESS_SETTINGS = ("connection_limit", "channel_timeout", "cleanup_interval")


def waitress_server(ini):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "config" / ini)
    return parser["server:main"]


def expected_stall(name):
    """``(seconds, slack)``: when a stalled request of ``name`` ends, from its configuration."""
    if name != "waitress":
        return STREAMING_STALL, SLACK
    server = waitress_server("kinto.ini")
    timeout = server.get("channel_timeout", Adjustments.channel_timeout)
    # waitress looks for inactive connections every cleanup_interval seconds.
    interval = server.get("cleanup_interval", Adjustments.cleanup_interval)
    return int(timeout), int(interval) + SLACK


@pytest.fixture(params=["waitress", "gunicorn", "uwsgi"])
def server(request, tmp_path, monkeypatch):
    monkeypatch.setenv("KINTO_STALL_TIMEOUT", str(STREAMING_STALL))
    with running_server(tmp_path, request.param) as live:
        live.name = request.param
        yield live


def check(report, stall, slack):
    """What every configuration must do, seen in ``report`` (:class:`slow_clients.Report`)."""
    summary = report.summary()
    assert report.answers and all(status == 200 for _, status, _ in report.answers), summary
    assert report.slowest < ANSWER_WITHIN, summary
    for kind in ("idle", "head-stalled", "body-stalled"):
        ends = [at for at, _ in report.ended[kind]]
        assert len(ends) == report.sizes[kind], (kind, summary)
        assert all(stall - 1 <= at <= stall + slack for at in ends), (kind, summary)
    # A body that keeps coming, however slowly, is not cut.
    assert report.ended["body-trickle"] == [], summary


def test_slow_and_idle_clients(server, capsys):
    stall, slack = expected_stall(server.name)
    create_collection(server, "slow", "clients")
    records = "/v1/buckets/slow/collections/clients/records"
    report = withstand(
        ("127.0.0.1", server.port), f"{server.origin}/v1/", records, stall + slack + 1
    )
    with capsys.disabled():
        print(f"\n{server.name} (stall {stall} s):\n{report.summary()}")
    check(report, stall, slack)


@pytest.mark.parametrize("ini", ["postgresql.ini", "s3.ini", "gcs.ini"])
def test_every_waitress_configuration_withstands_alike(ini):
    """The other configurations' ``[server:main]`` bound slow and idle clients as
    ``config/kinto.ini``'s, tested live above."""
    shipped = waitress_server("kinto.ini")
    other = waitress_server(ini)
    for name in (*WAITRESS_SETTINGS, "asyncore_use_poll"):
        assert other.get(name) == shipped.get(name) is not None, (ini, name)
