"""Fixtures shared by every test suite.

Keep each fixture small, documented and in a section of its own; suite-wide
helpers belong in the suite's own conftest (e.g. tests/integration/).
"""

from __future__ import annotations

import re
import shutil
import urllib.request
import uuid

import pytest

from kubeling.local.etcd_server import EtcdServer
from services.apiserver.storage import Storage

# -- etcd and the apiserver's storage ----------------------------------------


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory):
    """A real etcd for the whole session (free loopback port, temporary data dir).

    Shared: isolate your keys with ``key_prefix``, and do not stop it. To
    restart or break etcd, use ``fresh_etcd_server``. Compacting it is fine:
    later tests start from newer revisions.
    """
    base = tmp_path_factory.mktemp("etcd")
    server = EtcdServer(base / "data", log_path=base / "etcd.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fresh_etcd_server(tmp_path):
    """A real etcd for one test only, which the test may stop and start again."""
    server = EtcdServer(tmp_path / "etcd-data", log_path=tmp_path / "etcd.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "etcd-data", ignore_errors=True)


@pytest.fixture
def key_prefix(request) -> bytes:
    """A key prefix no other test uses, e.g. ``b"/test/test_get_missing-1a2b3c4d/"``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60]
    return f"/test/{name}-{uuid.uuid4().hex[:8]}/".encode()


@pytest.fixture
async def storage(etcd_server):
    """A connected ``Storage`` on the session's etcd; closed after the test."""
    store = Storage([etcd_server.endpoint])
    await store.connect()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def etcd_watcher_count(etcd_server):
    """A function returning how many watches the session etcd has open right now.

    Read from etcd's own metrics (``etcd_debugging_mvcc_watcher_total``), so
    it proves what the server sees, not what the client believes.
    """

    def count() -> int:
        with urllib.request.urlopen(f"{etcd_server.client_url}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("etcd_debugging_mvcc_watcher_total "):
                    return int(float(line.split()[1]))
        raise AssertionError("etcd did not report etcd_debugging_mvcc_watcher_total")

    return count
