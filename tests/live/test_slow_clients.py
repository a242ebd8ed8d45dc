"""Each shipped server configuration, started as the documentation starts it, keeps answering a
well-behaved client within 2 s while 200 idle connections and 20 slow clients are open (partial
request heads, upload bodies that stop, heads and bodies sent a byte every 10 s), and ends
each stalled request after its documented time (docs/security.rst).

waitress runs ``config/kinto.ini`` as shipped (only its address and files folder differ, as in
every live test): its ``channel_timeout`` is the time waited. gunicorn and uWSGI run their
shipped files with ``KINTO_STALL_TIMEOUT`` (the setting both read) at 15 s, to wait less: still
longer than a trickle's 10 s between bytes, which must not be cut as a stall. gunicorn's
worker cuts it all the same, after 15 s of waiting for too few bytes (its minimum pace). The
three servers face their crowds at the same time (the module waits the longest stall, not
their sum). nginx in front of each: ``tests/live/test_nginx_slow_clients.py``; one request
stalled at a time: ``tests/live/test_stalled_requests.py``.
"""

import configparser
import contextlib
import re

import pytest
from waitress.adjustments import Adjustments

from ..support.live import ROOT, create_collection, running_server
from ..support.slow_clients import ANSWER_WITHIN, withstand_each


pytestmark = pytest.mark.live

#: KINTO_STALL_TIMEOUT of the streaming servers here (their shipped default is 30).
STREAMING_STALL = 15
#: Seconds past the stall timeout within which a stalled request must have ended.
SLACK = 5
WAITRESS_SETTINGS = ("connection_limit", "channel_timeout", "cleanup_interval")
SERVERS = ("waitress", "gunicorn", "uwsgi")
RECORDS = "/v1/buckets/slow/collections/clients/records"


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


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """``{server: Report}``: each server started, then all three facing their crowd at once."""
    with contextlib.ExitStack() as servers:
        runs = {}
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("KINTO_STALL_TIMEOUT", str(STREAMING_STALL))
            for name in SERVERS:
                live = servers.enter_context(running_server(tmp_path_factory.mktemp(name), name))
                create_collection(live, "slow", "clients")
                stall, slack = expected_stall(name)
                address, url = ("127.0.0.1", live.port), f"{live.origin}/v1/"
                runs[name] = (address, url, RECORDS, stall + slack + 1)
        return withstand_each(runs)


#: The servers that cut a body slower than their minimum pace (gunicorn's worker:
#: ``MIN_RECEIVED`` bytes per stall timeout of waiting), as a stalled one.
PACED = ("gunicorn",)


def check(report, stall, slack, server):
    """What every configuration must do, seen in ``report`` (:class:`slow_clients.Report`)."""
    summary = report.summary()
    assert report.answers and all(status == 200 for _, status, _ in report.answers), summary
    assert report.slowest < ANSWER_WITHIN, summary
    cut = ("idle", "head-stalled", "body-stalled")
    for kind in (*cut, "body-trickle") if server in PACED else cut:
        ends = [at for at, _ in report.ended[kind]]
        assert len(ends) == report.sizes[kind], (kind, summary)
        assert all(stall - 1 <= at <= stall + slack for at in ends), (kind, summary)
    if server not in PACED:
        # A body that keeps coming, however slowly, is not cut.
        assert report.ended["body-trickle"] == [], summary


@pytest.mark.parametrize("server", SERVERS)
def test_slow_and_idle_clients(server, reports, capsys):
    stall, slack = expected_stall(server)
    with capsys.disabled():
        print(f"\n{server} (stall {stall} s):\n{reports[server].summary()}")
    check(reports[server], stall, slack, server)


@pytest.mark.parametrize("ini", ["postgresql.ini", "s3.ini", "gcs.ini"])
def test_every_waitress_configuration_withstands_alike(ini):
    """The other configurations' ``[server:main]`` bound slow and idle clients as
    ``config/kinto.ini``'s, tested live above."""
    shipped = waitress_server("kinto.ini")
    other = waitress_server(ini)
    for name in (*WAITRESS_SETTINGS, "asyncore_use_poll"):
        assert other.get(name) == shipped.get(name) is not None, (ini, name)


def setting(path, pattern):
    """The one value ``pattern`` (a regex with one group) finds in ``config/path``."""
    found = re.findall(pattern, (ROOT / "config" / path).read_text(), flags=re.MULTILINE)
    assert len(found) == 1, (path, pattern, found)
    return found[0]


def test_the_documentation_says_what_each_configuration_sets():
    """docs/security.rst names the values the shipped files set."""
    readme = " ".join((ROOT / "docs" / "security.rst").read_text().split())
    server = waitress_server("kinto.ini")
    for name in WAITRESS_SETTINGS:
        assert f"``{name} = {server[name]}``" in readme, name
    stall = setting("gunicorn.conf.py", r'"KINTO_STALL_TIMEOUT", "(\d+)"')
    assert setting("uwsgi.ini", r"^socket-timeout = (\d+)$") == stall
    assert setting("nginx.conf", r"^\s*client_header_timeout (\d+)s;$") == stall
    assert f"``client_header_timeout {stall}s``" in readme
    assert f"within {stall} seconds" in readme and f"waits {stall} seconds" in readme
    threads = setting("gunicorn.conf.py", r"^threads = (\d+)$")
    assert f"one of the {threads} threads" in readme
    uwsgi_threads = setting("uwsgi.ini", r"^threads = (\d+)$")
    assert f"one of its {uwsgi_threads} threads" in readme
    connections = setting("gunicorn.conf.py", r"^worker_connections = (\d+)$")
    assert f"``worker_connections = {connections}``" in readme
