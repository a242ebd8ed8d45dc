"""``config/nginx.conf`` as shipped, in Debian's nginx in front of each server (waitress,
gunicorn, uWSGI, each from its shipped configuration): the well-behaved client is answered
within 2 s while 200 idle connections and 20 slow clients are open on nginx, and nginx ends each
stalled request after its timeouts (``client_header_timeout``, ``client_body_timeout``). See
``tests/live/test_slow_clients.py`` for the servers alone, and ``tests/live/test_nginx.py`` for the
recipe's other tests (and why nginx must be installed). The three deployments face their crowds
at the same time (the module waits one stall, not three).
"""

import contextlib
import re

import pytest

from ..support.live import PortTaken, create_collection, free_port, running_server
from ..support.slow_clients import withstand_each
from .test_nginx import MAIN, MIME_TYPES, RECIPE, nginx_binary, recipe, running_nginx
from .test_slow_clients import RECORDS, SERVERS, SLACK, check


pytestmark = pytest.mark.live


def recipe_seconds(directive):
    """The value of ``directive`` in the recipe, in seconds (written ``30s``)."""
    found = re.findall(rf"^\s*{directive} (\d+)s;$", RECIPE.read_text(), flags=re.MULTILINE)
    assert len(found) == 1, directive
    return int(found[0])


@contextlib.contextmanager
def deployment(folder, name):
    """``(nginx's port, the server behind it)``: ``name`` served in ``folder``, nginx in front."""
    nginx = nginx_binary()
    (folder / "kinto").mkdir()
    with running_server(folder / "kinto", name) as kinto:
        for attempt in range(3):
            port = free_port()
            conf = folder / f"nginx-{attempt}"
            conf.mkdir()
            (conf / "kinto.conf").write_text(recipe(port, kinto.port, kinto.base_path))
            (conf / "nginx.conf").write_text(MAIN.format(folder=conf, mime_types=MIME_TYPES))
            try:
                with running_nginx(nginx, conf, port):
                    yield port, kinto
                    return
            except PortTaken:
                if attempt == 2:
                    raise


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """``{server: Report}``: each deployment started, then all three facing their crowd (on
    nginx) at once."""
    stall = recipe_seconds("client_header_timeout")
    with contextlib.ExitStack() as deployments:
        runs = {}
        for name in SERVERS:
            port, kinto = deployments.enter_context(
                deployment(tmp_path_factory.mktemp(name), name)
            )
            create_collection(kinto, "slow", "clients")
            address, url = ("127.0.0.1", port), f"http://127.0.0.1:{port}/v1/"
            runs[name] = (address, url, RECORDS, stall + SLACK + 1)
        return withstand_each(runs)


@pytest.mark.parametrize("server", SERVERS)
def test_slow_and_idle_clients(server, reports, capsys):
    stall = recipe_seconds("client_header_timeout")
    assert recipe_seconds("client_body_timeout") == stall
    with capsys.disabled():
        print(f"\nnginx in front of {server} (stall {stall} s):\n{reports[server].summary()}")
    check(reports[server], stall, SLACK, server)
