"""Helpers of the live tests: a real waitress server, the documented examples, real clients.

:func:`running_server` starts ``pserve`` on a copy of the shipped ``config/kinto.ini`` that only
differs by its port, its host (loopback) and its files folder (a temporary one).
:func:`documented_examples` extracts the code blocks of ``README.rst`` and of the pages of
``docs/`` that follow a ``.. live-test: NAME`` comment, so that the documented commands are the
tested ones; :func:`run_bash` runs them as a user typing in a terminal would (or a script, for
stdin), from the scratch folder the documentation moves to (:func:`scratch_folder`), and
:func:`checkout_untouched` checks that they leave the clone as it was.
``bench/servers.py`` starts its servers (and its moto process) with :func:`started` too.
:func:`ensure_peer` builds (once, then from a cache) the virtualenv of Mozilla's
kinto-attachment that ``bench/servers.py`` measures against and ``tests/support/legacy.py`` runs,
with :func:`built_once`, which ``tests/live/test_admin.py`` builds Kinto Admin with too.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import requests


ROOT = Path(__file__).resolve().parents[2]
#: The pages whose examples are tested: the front page and every page of the documentation.
DOCUMENTED = (
    ROOT / "README.rst",
    *sorted(p for p in (ROOT / "docs").glob("**/*.rst") if "_build" not in p.parts),
)
CONFIG = ROOT / "config" / "kinto.ini"
#: The virtualenv's scripts: ``pserve``, ``http``...
BIN = Path(sys.executable).parent
#: What the documentation and the shipped configuration use.
DOCUMENTED_ADDRESS = "localhost:8888"

START_TIMEOUT = 30
STOP_TIMEOUT = 10
#: Upper bound of any client command.
COMMAND_TIMEOUT = 60
REQUEST_TIMEOUT = 30

ALICE = ("alice", "passwd")


# The server.


def free_port():
    """A loopback TCP port nobody listens on now (the kernel's pick), for a configuration that
    must name the server's own port before it starts (an absolute ``base_url`` served by the
    server itself). Another process may take it before the server binds it: then the server
    exits with "Address already in use" (see :meth:`LiveServer.wait_bound`) and the caller
    starts again on another port. Everywhere else, configure port 0 and read the bound port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: What waitress logs once it listens (with the port it bound, when configured with port 0).
SERVING = re.compile(r"\bServing on http://127\.0\.0\.1:(\d+)$", flags=re.MULTILINE)
#: What werkzeug (``moto_server``) logs once it listens, likewise.
RUNNING = re.compile(r"\bRunning on http://127\.0\.0\.1:(\d+)$", flags=re.MULTILINE)
ADDRESS_IN_USE = "Address already in use"


class PortTaken(Exception):
    """The configured port was taken between :func:`free_port` and the server's bind."""


def live_config(port, base_path, template=CONFIG):
    """The shipped configuration, on ``127.0.0.1:port`` and storing files in ``base_path``.

    ``port`` 0: the kernel picks a free port when the server binds (no race); the configuration
    then names ``localhost:0`` where it names its own address (``base_url``).
    """
    text = template.read_text()
    substitutions = [
        (r"^port = 8888$", f"port = {port}"),
        (r"^host = localhost$", "host = 127.0.0.1"),
        (
            r"^kinto\.attachment\.base_path = .*$",
            "kinto.attachment.base_path = " + str(base_path).replace("%", "%%"),
        ),
    ]
    for pattern, replacement in substitutions:
        text, count = re.subn(pattern, lambda _, r=replacement: r, text, flags=re.MULTILINE)
        if count != 1:
            raise AssertionError(f"{template}: {count} lines match {pattern!r}, expected 1")
    if DOCUMENTED_ADDRESS not in text:
        raise AssertionError(f"{template} no longer mentions {DOCUMENTED_ADDRESS}")
    return text.replace(DOCUMENTED_ADDRESS, f"localhost:{port}")


@dataclasses.dataclass
class LiveServer:
    process: subprocess.Popen
    #: The configured port (0: any); the bound one once :meth:`wait_bound` returned.
    port: int
    base_path: Path
    output_path: Path
    bound: bool = False
    #: The line that tells the server listens, and on which port (group 1).
    serving: re.Pattern = SERVING

    @property
    def url(self):
        """The API root, as the documentation spells it (``localhost``)."""
        return f"http://localhost:{self.port}/v1"

    @property
    def origin(self):
        """``http://127.0.0.1:port``: the bound address itself, with no name to resolve."""
        return f"http://127.0.0.1:{self.port}"

    def output(self):
        """What the server wrote on its stdout and stderr."""
        return self.output_path.read_text(errors="replace")

    def path_of(self, location):
        """The file under ``base_path`` that an attachment ``location`` serves."""
        prefix = f"{self.url}/attachments/"
        assert location.startswith(prefix), f"{location!r} is not under {prefix!r}"
        path = (self.base_path / location[len(prefix) :]).resolve()
        assert path.is_relative_to(self.base_path.resolve()), location
        return path

    def files(self):
        """Paths of every file under ``base_path`` (temporary ones included), relative."""
        return sorted(
            str(path.relative_to(self.base_path))
            for path in self.base_path.rglob("*")
            if path.is_file()
        )

    def vm_hwm(self):
        """Peak resident memory of the server process so far, in bytes (Linux)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB$", status, flags=re.MULTILINE)
        assert match, status
        return int(match.group(1)) * 1024

    def wait_bound(self, timeout=START_TIMEOUT):
        """Wait for waitress's "Serving on" line; set :attr:`port` to the port it bound.

        Raises :class:`PortTaken` when a configured port was already in use.
        """
        deadline = time.monotonic() + timeout
        while not self.bound:
            output = self.output()
            serving = self.serving.findall(output)
            if serving:
                assert len(set(serving)) == 1, f"several addresses:\n{output}"
                port = int(serving[0])
                assert self.port in (0, port), f"configured {self.port}, bound {port}"
                self.port, self.bound = port, True
            elif self.process.poll() is not None:
                # Python says "Address already in use", Go (fake-gcs-server) "address...".
                if self.port and ADDRESS_IN_USE.lower() in output.lower():
                    raise PortTaken(f"{self.port}: {output}")
                pytest.fail(
                    f"pserve exited with {self.process.returncode} before listening:\n{output}",
                    pytrace=False,
                )
            elif time.monotonic() > deadline:
                pytest.fail(
                    f"pserve did not log 'Serving on' within {timeout} s:\n{output}",
                    pytrace=False,
                )
            else:
                time.sleep(0.05)
        return self.port

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        self.wait_bound(timeout)
        last = "no answer"
        while True:
            if self.process.poll() is not None:
                pytest.fail(
                    f"pserve exited with {self.process.returncode} before answering:\n"
                    + self.output(),
                    pytrace=False,
                )
            try:
                response = requests.get(f"{self.url}/__heartbeat__", timeout=2)
            except requests.RequestException as e:
                last = repr(e)
            else:
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.url}/__heartbeat__ did not answer 200 within {timeout} s "
                    f"(last: {last}); server output:\n{self.output()}",
                    pytrace=False,
                )
            time.sleep(0.1)

    def stop(self, timeout=STOP_TIMEOUT):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


@contextlib.contextmanager
def started(folder, ini, port=0, base_path=None, env=None, command=None, serving=SERVING):
    """``pserve ini`` in ``folder`` until exit, not yet waited for (see ``wait_ready``).

    ``port``: the one ``ini`` configures (0: the kernel's pick, read back by ``wait_bound``).
    ``env``: the server's whole environment (the test process's when None).
    ``command``: another server's command line instead of ``pserve ini`` (``ini`` unused),
    which logs ``serving`` once it listens (see :attr:`LiveServer.serving`).
    """
    fd, name = tempfile.mkstemp(prefix="server-", suffix=".log", dir=folder)
    os.close(fd)
    output_path = Path(name)
    with open(output_path, "wb") as output:
        process = subprocess.Popen(
            command or [str(BIN / "pserve"), str(ini)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env=env,
        )
    server = LiveServer(process, port, base_path, output_path, serving=serving)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_server(folder, server="waitress", app=None, extended_by=None, http_host=False):
    """The live copy of ``config/kinto.ini`` served in ``folder`` until exit: by ``pserve``
    (waitress), or by ``server`` (gunicorn, uwsgi: :func:`streaming_command`) running ``app``
    (default ``config/wsgi.py``). ``extended_by``: a shipped configuration that extends
    ``kinto.ini`` (``use = config:kinto.ini#main``), copied beside the live copy and served
    instead. ``http_host``: the server's address is Kinto's ``http_host`` (which events on
    local disk require: their fetch URLs lead there)."""
    folder = Path(folder)
    base_path = folder / "attachments"
    base_path.mkdir()
    ini = folder / "kinto.ini"
    for attempt in range(3):
        # The configuration names the server's own address (base_url): port known beforehand.
        port = free_port()
        ini.write_text(live_config(port, base_path))
        env, command, serving = None, None, SERVING
        if http_host:
            env = {**os.environ, "KINTO_HTTP_HOST": f"localhost:{port}"}
        served = ini
        if extended_by is not None:
            served = Path(shutil.copyfile(extended_by, folder / extended_by.name))
        if server != "waitress":
            env = {**(env or os.environ), "KINTO_INI": str(served)}
            app = app or (ROOT / "config", "wsgi")
            command = streaming_command(server, folder, port, app)
            serving = LISTENING[server]
        with started(folder, served, port, base_path, env, command, serving) as live:
            try:
                live.wait_bound()
            except PortTaken:
                if attempt < 2:
                    continue
                raise
            live.wait_ready()
            yield live
            return


# The peer: Mozilla's kinto-attachment, in a virtualenv of its own.


#: What the peer's virtualenv holds: Kinto and Mozilla's kinto-attachment 8.0.0 (the last
#: release that runs on Python 3.11), served by waitress, with Kinto's PostgreSQL backends.
PEER_REQUIREMENTS = [
    "kinto==26.5.0",
    "kinto-attachment==8.0.0",
    "waitress",
    # kinto-attachment 8.0.0 imports pkg_resources, which later setuptools releases removed.
    "setuptools<81",
    # What ``kinto[postgresql]`` brings, with psycopg2's wheel instead of its source (no
    # compiler nor libpq headers needed).
    "psycopg2-binary",
    "SQLAlchemy<3",
    "zope.sqlalchemy",
]
#: Where the virtualenvs of the tests (the peer's, the release's) are kept between runs, one per
#: Python and requirements.
PEER_CACHE = Path(
    os.environ.get("KINTO_ATTACHMENT_PEER_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kinto-attachment-peer"
)
PEER_BUILD_TIMEOUT = 600


def peer_env():
    """The environment of the peer's commands: this project's modules out of their path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def pip_install(python):
    """The start of a quiet ``pip install`` command line in the virtualenv of ``python``."""
    return [str(python), "-m", "pip", "install", "-qq", "--disable-pip-version-check"]


def run_in_cache(command, timeout=PEER_BUILD_TIMEOUT):
    """Run ``command`` in :data:`PEER_CACHE`, away from this project's own kinto_attachment."""
    subprocess.run(
        command,
        check=True,
        cwd=PEER_CACHE,
        env=peer_env(),
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def cached_virtualenv(name, requirements, check):
    """The ``bin`` folder of a virtualenv with ``requirements`` (arguments of ``pip install``),
    built with pip from the package index on first use, ``check`` (Python code) run in it.

    It is kept in :data:`PEER_CACHE` (see :func:`built_once`), under ``name`` and a hash of the
    Python version and ``requirements``.
    """
    identity = "\n".join([sys.version, *requirements]).encode()
    venv = PEER_CACHE / f"{name}-{hashlib.sha256(identity).hexdigest()[:16]}"

    def build(venv):
        python = venv / "bin" / "python"
        run_in_cache([sys.executable, "-m", "venv", str(venv)])
        run_in_cache(pip_install(python) + list(requirements))
        run_in_cache([str(python), "-c", check])

    return built_once(venv, build) / "bin"


def built_once(folder, build):
    """``folder``, made by ``build(folder)`` unless a previous run completed it.

    For what tests build from a registry and keep outside the work tree (so that a fresh clone
    reuses it), under a name that changes with what it is built from. A lock lets concurrent
    runs wait for one build; a build that did not finish (no ``.complete`` marker) is started
    again from scratch.
    """
    complete = folder / ".complete"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not complete.exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            complete.touch()
    return folder


def ensure_peer():
    """The ``bin`` folder of the peer's virtualenv (:func:`cached_virtualenv`)."""
    check = "import kinto, kinto_attachment, psycopg2, waitress"
    return cached_virtualenv("peer", PEER_REQUIREMENTS, check)


#: The tus-js-client the documentation installs (``npm install tus-js-client``), major pinned.
TUS_JS_CLIENT = "tus-js-client@4"


def ensure_tus_js():
    """The ``node_modules`` folder of :data:`TUS_JS_CLIENT`, installed from the npm registry
    on first use and kept in :data:`PEER_CACHE` (:func:`built_once`): for ``NODE_PATH``."""

    def build(folder):
        folder.mkdir()
        # Else npm installs into the nearest parent folder that has a package.json.
        (folder / "package.json").write_text("{}")
        command = ["npm", "install", "--no-audit", "--no-fund", "--silent", TUS_JS_CLIENT]
        subprocess.run(command, check=True, cwd=folder, stdin=subprocess.DEVNULL, timeout=300)

    return built_once(PEER_CACHE / TUS_JS_CLIENT.replace("@", "-"), build) / "node_modules"


# The documented examples.


MARKER = re.compile(r"^\.\. live-test: (\S+)\s*$")
CODE_BLOCK = re.compile(r"^(\s*)\.\. code-block:: (\S+)\s*$")


@dataclasses.dataclass
class Example:
    """A code block of a page, named by the ``.. live-test: NAME`` comment before it (None when
    it has none)."""

    name: str | None
    language: str
    code: str
    #: The page, relative to the repository (``docs/getting-started.rst``).
    page: str
    #: Where the block's comment is (its directive, without one).
    line: int

    def against(self, port):
        """The code as written, addressed to ``localhost:port`` instead of the documented one."""
        assert DOCUMENTED_ADDRESS in self.code, (
            f"{self.page}:{self.line}: example {self.name!r} does not use {DOCUMENTED_ADDRESS}"
        )
        return self.code.replace(DOCUMENTED_ADDRESS, f"localhost:{port}")


def _indent(line):
    return len(line) - len(line.lstrip())


def _block_body(lines, start, indent):
    """The code of the directive at ``lines[start]``, dedented, and the index after it."""
    end = start + 1
    while end < len(lines) and not (lines[end].strip() and _indent(lines[end]) <= indent):
        end += 1
    body = lines[start + 1 : end]
    # Directive options (":linenos:"...) come before the first blank line.
    while body and body[0].strip().startswith(":"):
        body.pop(0)
    return textwrap.dedent("\n".join(body)).strip("\n"), end


def code_blocks(path):
    """Every ``.. code-block::`` of the page at ``path``, in the page's order."""
    lines = path.read_text().splitlines()
    page = path.relative_to(ROOT).as_posix()
    blocks = []
    marker = None  # (name, line) of a comment waiting for its block.
    number = 0
    while number < len(lines):
        line = lines[number]
        directive = CODE_BLOCK.match(line)
        if directive is None:
            if marker is not None and line.strip():
                raise AssertionError(
                    f"{page}:{marker[1]}: {marker[0]!r} is not followed by a code-block"
                )
            if found := MARKER.match(line):
                marker = (found.group(1), number + 1)
            number += 1
            continue
        code, end = _block_body(lines, number, len(directive.group(1)))
        name, where = marker if marker is not None else (None, number + 1)
        if name is not None and not code:
            raise AssertionError(f"{page}:{where}: the code-block of {name!r} is empty")
        blocks.append(Example(name, directive.group(2), code + "\n", page, where))
        marker = None
        number = end
    if marker is not None:
        raise AssertionError(f"{page}:{marker[1]}: {marker[0]!r} is not followed by a code-block")
    return blocks


def documented_examples(pages=DOCUMENTED):
    """``{name: Example}`` for each code block of ``pages`` that follows a
    ``.. live-test: NAME`` comment; a name is given once in all the pages."""
    examples = {}
    for path in pages:
        for block in code_blocks(path):
            if block.name is None:
                continue
            if block.name in examples:
                first = examples[block.name]
                raise AssertionError(
                    f"{block.page}:{block.line}: a second example is named {block.name!r} "
                    f"(first at {first.page}:{first.line})"
                )
            examples[block.name] = block
    return examples


# Running clients.


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def client_env(cwd, home=None):
    """The environment of the clients: the virtualenv first on PATH, no user configuration.

    ``home``: where the clients' (empty) configuration and temporary folders go (``TMPDIR``:
    ``mktemp -d`` makes its folders there), for commands that start in the checkout; ``cwd``
    by default.
    """
    config = Path(home or cwd) / ".client-config"
    config.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        # A developer's ~/.config/httpie or ~/.curlrc must not change what the commands print.
        "HTTPIE_CONFIG_DIR": str(config),
        "CURL_HOME": str(config),
    }
    if home is not None:
        env["TMPDIR"] = str(home)
    return env


ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def _read_terminal(master, process, timeout):
    """Everything written on the terminal until every process closed it, within ``timeout``."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise subprocess.TimeoutExpired(process.args, timeout, output=b"".join(chunks))
        ready, _, _ = select.select([master], [], [], remaining)
        if not ready:
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the last holder of the terminal's other end closed it.
            data = b""
        if not data:
            break
        chunks.append(data)
    process.wait(max(deadline - time.monotonic(), 0.1))
    return b"".join(chunks)


def run_bash(code, cwd, timeout=COMMAND_TIMEOUT, home=None):
    """Run ``code`` with ``bash -e`` as typed in a terminal, or in a script (see ``stdin``).

    stdout is a pseudo-terminal: HTTPie shows the response headers, as to a user. stdin is not
    one (``/dev/null``), as in a script or CI: an HTTPie command sending a form then fails
    unless told ``--ignore-stdin`` (the documented ones are), which a user's terminal would not
    show. stderr is kept apart. The terminal's escape sequences (colours) and carriage returns
    are removed from stdout. ``home``: see :func:`client_env`.
    """
    master, slave = os.openpty()
    try:
        with tempfile.TemporaryFile() as stderr:
            try:
                process = subprocess.Popen(
                    ["bash", "-e", "-c", code],
                    stdin=subprocess.DEVNULL,
                    stdout=slave,
                    stderr=stderr,
                    cwd=cwd,
                    env=client_env(cwd, home),
                    start_new_session=True,
                )
            finally:
                os.close(slave)
            output = _read_terminal(master, process, timeout)
            stderr.seek(0)
            errors = stderr.read()
    finally:
        os.close(master)
    stdout = re.sub(r"\r+\n", "\n", ANSI_ESCAPE.sub("", output.decode(errors="replace")))
    return Result(process.returncode, stdout, errors.decode(errors="replace"))


def scratch_folder(example, home):
    """The folder the documented ``example`` moves to from the root of the checkout, as a user
    runs it there before the other examples (``cd "$(mktemp -d)"``: a new folder in ``home``)."""
    result = run_bash(example.code + "pwd\n", ROOT, home=home)
    assert result.returncode == 0, (example.page, example.line, result)
    folder = Path(result.stdout.splitlines()[-1])
    assert folder.is_relative_to(home) and folder != Path(home), (example.code, folder)
    return folder


def run_command(command, cwd, env=None, timeout=COMMAND_TIMEOUT):
    """Run a command line; return its :class:`subprocess.CompletedProcess` (text)."""
    return subprocess.run(
        [str(part) for part in command],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def checkout_status():
    """``git status --porcelain`` of the checkout, each untracked file named (None outside a
    git checkout: an unpacked sdist)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        return None
    completed = run_command(["git", "status", "--porcelain", "--untracked-files=all"], ROOT)
    assert completed.returncode == 0, completed
    return completed.stdout


@contextlib.contextmanager
def checkout_untouched():
    """Fail if what runs inside changes the checkout's ``git status``: the documented examples
    write their files in a scratch folder, never in the clone."""
    before = checkout_status()
    yield
    after = checkout_status()
    assert after == before, f"git status before:\n{before}\nafter:\n{after}"


def run_python(code, cwd, timeout=COMMAND_TIMEOUT):
    """Run ``code`` with the virtualenv's Python."""
    completed = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=client_env(cwd),
        timeout=timeout,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def curl(*args, cwd, timeout=COMMAND_TIMEOUT):
    """``curl args...``: ``(HTTP status, parsed JSON body or None)``."""
    completed = subprocess.run(
        ["curl", "--silent", "--show-error", "--write-out", "\n%{http_code}", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=cwd,
        env=client_env(cwd),
        timeout=timeout,
    )
    assert completed.returncode == 0, completed
    body, _, status = completed.stdout.decode().rpartition("\n")
    return int(status), json.loads(body) if body.strip() else None


# Files and checks.


def write_random_file(path, size, chunk=1024 * 1024):
    """Write ``size`` random bytes to ``path`` without holding them; return their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            data = os.urandom(min(chunk, remaining))
            digest.update(data)
            f.write(data)
            remaining -= len(data)
    return digest.hexdigest()


def sha256_of(path, chunk=1024 * 1024):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(chunk):
            digest.update(data)
    return digest.hexdigest()


def get(url, auth=ALICE, status=200):
    response = requests.get(url, auth=auth, timeout=REQUEST_TIMEOUT)
    assert response.status_code == status, (url, response.status_code, response.text)
    return response


def create_collection(server, bucket, collection):
    for path in (f"/buckets/{bucket}", f"/buckets/{bucket}/collections/{collection}"):
        response = requests.put(server.url + path, json={}, auth=ALICE, timeout=REQUEST_TIMEOUT)
        assert response.status_code in (200, 201), (path, response.status_code, response.text)


# Streaming servers: gunicorn and uWSGI, from their shipped configurations.


#: What each streaming server logs once it listens (with its port).
LISTENING = {
    "gunicorn": re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)"),
    "uwsgi": re.compile(r"bound to TCP address 127\.0\.0\.1:(\d+)"),
}


def uwsgi_ini(port, wsgi_file):
    """``config/uwsgi.ini`` as shipped, listening on ``127.0.0.1:port`` and loading
    ``wsgi_file``."""
    text = (ROOT / "config" / "uwsgi.ini").read_text()
    text, bound = re.subn(
        r"^http-socket = .*$", f"http-socket = 127.0.0.1:{port}", text, flags=re.M
    )
    text, app = re.subn(r"^wsgi-file = .*$", f"wsgi-file = {wsgi_file}", text, flags=re.M)
    assert (bound, app) == (1, 1), "config/uwsgi.ini: one http-socket, one wsgi-file"
    return text


def streaming_command(name, folder, port, app):
    """The command line of ``name`` (gunicorn, uwsgi) with its shipped configuration, on
    ``127.0.0.1:port``, serving ``app``: a ``(folder, module)`` pair, the module defining
    ``application``."""
    app_folder, module = app
    if name == "gunicorn":
        config = str(ROOT / "config" / "gunicorn.conf.py")
        return [str(BIN / "gunicorn"), "-c", config, "--bind", f"127.0.0.1:{port}",
                "--pythonpath", str(app_folder), f"{module}:application"]  # fmt: skip
    ini = folder / f"uwsgi-{port}.ini"
    ini.write_text(uwsgi_ini(port, Path(app_folder) / f"{module}.py"))
    return [str(BIN / "uwsgi"), "--ini", str(ini)]


def post_without_reading(server, path, length, headers=""):
    """POST ``length`` announced bytes, sending some only while no answer has come: the
    status line, and how many body bytes were sent before it came."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{headers}"
            f"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {length}\r\n\r\n"
        )
        sock.sendall(head.encode())
        sock.setblocking(False)
        sent, answer, deadline = 0, b"", time.monotonic() + 30
        sending = True
        while b"\r\n" not in answer and time.monotonic() < deadline:
            try:
                received = sock.recv(65536)
            except BlockingIOError:
                received = None
            except (ConnectionResetError, TimeoutError):
                break
            if received == b"":
                break  # Closed: what came before is the answer.
            answer += received or b""
            try:
                sent += sock.send(b"\0" * 65536) if sending and sent < length else 0
            except (BlockingIOError, InterruptedError):
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                # The server answered and closed while we were sending: its answer may still
                # be on its way, or waiting in our receive buffer.
                sending = False
                sock.settimeout(10)
        return answer.split(b"\r\n", 1)[0].decode(), sent
