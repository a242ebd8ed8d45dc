"""Kinto's ``/__version__`` (Dockerflow's), answered where no ``version.json`` is deployed.

Kinto reads ``kinto.version_json_path`` (``version.json`` in the server's working directory
by default), which a deployment's build writes, and answers a ``500`` where there is none: with
every configuration this package ships, and with most written by hand, a monitor's probe of
``/__version__`` failed. Where the configured file does not exist, this package's own
(:data:`PACKAGED`: its name and version) is read instead; a deployment's own still wins.
"""

import os
from pathlib import Path


#: What ``/__version__`` answers without a deployment's file (``version`` is the package's).
PACKAGED = Path(__file__).with_name("version.json")


def includeme(config):
    settings = config.get_settings()
    if not os.path.exists(settings.get("version_json_path") or ""):
        settings["version_json_path"] = str(PACKAGED)
