"""``config/nginx.conf`` as shipped, in Debian's nginx in front of each server (waitress,
gunicorn, uWSGI, each from its shipped configuration): the well-behaved client is answered
within 2 s while 200 idle connections and 20 slow clients are open on nginx, and nginx ends each
stalled request after its timeouts (``client_header_timeout``, ``client_body_timeout``). See
``tests/live/test_slow_clients.py`` for the servers alone, and ``tests/live/test_nginx.py`` for the
recipe's other tests (and why nginx must be installed).
"""

import re

import pytest

from ..support.live import PortTaken, create_collection, free_port, running_server
from ..support.slow_clients import withstand
from .test_nginx import MAIN, MIME_TYPES, RECIPE, nginx_binary, recipe, running_nginx
from .test_slow_clients import SLACK, check


pytestmark = pytest.mark.live


def recipe_seconds(directive):
    """The value of ``directive`` in the recipe, in seconds (written ``30s``)."""
    found = re.findall(rf"^\s*{directive} (\d+)s;$", RECIPE.read_text(), flags=re.MULTILINE)
    assert len(found) == 1, directive
    return int(found[0])


@pytest.fixture(params=["waitress", "gunicorn", "uwsgi"])
def deployment(request, tmp_path):
    """``(nginx's port, the server behind it)``."""
    nginx = nginx_binary()
    (tmp_path / "kinto").mkdir()
    with running_server(tmp_path / "kinto", request.param) as kinto:
        kinto.name = request.param
        for attempt in range(3):
            port = free_port()
            folder = tmp_path / f"nginx-{attempt}"
            folder.mkdir()
            (folder / "kinto.conf").write_text(recipe(port, kinto.port, kinto.base_path))
            (folder / "nginx.conf").write_text(MAIN.format(folder=folder, mime_types=MIME_TYPES))
            try:
                with running_nginx(nginx, folder, port):
                    yield port, kinto
                    return
            except PortTaken:
                if attempt == 2:
                    raise


def test_slow_and_idle_clients(deployment, capsys):
    port, kinto = deployment
    stall = recipe_seconds("client_header_timeout")
    assert recipe_seconds("client_body_timeout") == stall
    create_collection(kinto, "slow", "clients")
    records = "/v1/buckets/slow/collections/clients/records"
    url = f"http://127.0.0.1:{port}/v1/"
    report = withstand(("127.0.0.1", port), url, records, stall + SLACK + 1)
    with capsys.disabled():
        print(f"\nnginx in front of {kinto.name} (stall {stall} s):\n{report.summary()}")
    check(report, stall, SLACK)
