"""The release: ``python -m build`` makes an sdist and a wheel, ``twine check`` accepts them, and
the wheel, installed in a virtualenv of its own with its dependencies from the package index,
serves an upload.

The build runs on a copy of the checkout's files (those git tracks or would, as a clone has
them) in a temporary folder: nothing is built in the checkout. The virtualenv is kept between
runs under a name made of the wheel's requirements (:func:`~tests.support.live.cached_virtualenv`,
as the peer's): each run installs the new wheel in it without its dependencies, then ``pip
check`` says they are all there.
"""

import configparser
import email.parser
import platform
import shutil
import subprocess
import sys
import zipfile

import pytest
import requests
from packaging.specifiers import SpecifierSet

from ..support.live import (
    ALICE,
    COMMAND_TIMEOUT,
    CONFIG,
    PEER_BUILD_TIMEOUT,
    ROOT,
    cached_virtualenv,
    checkout_untouched,
    live_config,
    peer_env,
    pip_install,
    run_command,
    started,
)


pytestmark = pytest.mark.live

NAME = "kinto_attachment_streaming"


def setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def checkout_files():
    """The checkout's files as a clone has them: tracked, or untracked and not ignored."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=COMMAND_TIMEOUT,
        )
        return [name for name in listed.stdout.decode().split("\0") if name]
    pytest.skip("not a git checkout: its files cannot be told from built ones")


def run(command, cwd, timeout=COMMAND_TIMEOUT):
    """Run ``command`` away from this project's own kinto_attachment; its stdout."""
    result = run_command(command, cwd, env=peer_env(), timeout=timeout)
    assert result.returncode == 0, result
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The folder of the sdist and the wheel, built from a copy of the checkout."""
    with checkout_untouched():
        source = tmp_path_factory.mktemp("release-source")
        for name in checkout_files():
            if (ROOT / name).is_file():
                (source / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, source / name)
        out = tmp_path_factory.mktemp("dist")
        run([sys.executable, "-m", "build", "--outdir", out, source], source, PEER_BUILD_TIMEOUT)
    return out


def test_sdist_and_wheel_pass_twine_check(dist):
    version = setup_cfg()["metadata"]["version"]
    built = sorted(p.name for p in dist.iterdir())
    assert built == [f"{NAME}-{version}-py3-none-any.whl", f"{NAME}-{version}.tar.gz"]
    output = run([sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir()], dist)
    assert output.count("PASSED") == 2, output


def wheel_metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def test_metadata_says_what_is_tested(dist):
    (wheel,) = dist.glob("*.whl")
    metadata = wheel_metadata(wheel)
    major, minor = sys.version_info[:2]
    tested = f"{major}.{minor}"
    # This Python, neither the one before nor the one after.
    requires = SpecifierSet(metadata["Requires-Python"])
    assert platform.python_version() in requires
    assert f"{major}.{minor - 1}.99" not in requires and f"{major}.{minor + 1}.0" not in requires
    versions = [
        c.rsplit(" :: ", 1)[1]
        for c in metadata.get_all("Classifier")
        if c.startswith("Programming Language :: Python :: 3.")
    ]
    assert versions == [tested]


def test_the_wheel_installs_in_a_virtualenv_and_serves_an_upload(dist, tmp_path):
    (wheel,) = dist.glob("*.whl")
    metadata = wheel_metadata(wheel)
    dependencies = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    bin_ = cached_virtualenv("release", dependencies, "import kinto, multipart, waitress")
    python = bin_ / "python"
    run([*pip_install(python), "--no-deps", "--force-reinstall", wheel], tmp_path)
    run([python, "-m", "pip", "check"], tmp_path)
    where = run([python, "-c", "import kinto_attachment as k; print(k.__file__)"], tmp_path)
    assert ROOT.as_posix() not in where and "site-packages" in where

    base_path = tmp_path / "attachments"
    base_path.mkdir()
    ini = tmp_path / "kinto.ini"
    ini.write_text(live_config(0, base_path, template=CONFIG))
    command = [str(bin_ / "pserve"), str(ini)]
    with started(tmp_path, ini, env=peer_env(), command=command) as server:
        server.wait_bound()
        server.wait_ready()
        capability = requests.get(server.url + "/", timeout=30).json()["capabilities"]
        assert capability["attachments"]["version"] == metadata["Version"]
        # The package's version.json went into the wheel (package data).
        version = requests.get(server.url + "/__version__", timeout=30)
        assert version.json()["version"] == metadata["Version"], version.text
        record = f"{server.url}/buckets/default/collections/notes/records/hello"
        response = requests.post(
            f"{record}/attachment",
            files={"attachment": ("hello.txt", b"Hello, Kinto!", "text/plain")},
            auth=ALICE,
            timeout=30,
        )
        assert response.status_code == 201, response.text
        download = requests.get(f"{record}/attachment", auth=ALICE, timeout=30)
        assert download.content == b"Hello, Kinto!"
        assert list(base_path.rglob("*.txt")), server.output()
