"""A view of an enforced copy is counted once when the server handling it dies (kill -9), on a
real 3-server cloud: the server running ``share_view`` kills itself with SIGKILL
(``CLOUDP2P_DIRECTORY_CRASH``, first server only) either inside the transaction (the count is
written, not committed) or just after the commit (counted and journaled, no reply sent). The
router re-assigns the request; the client gets the share, and the cloud has counted one view.
"""

from __future__ import annotations

import base64
import os
import uuid

import pytest
import pytest_twisted

from cloudp2p.directory.store import CRASH_ENV
from cloudp2p.directory.token_seal import sign_in
from tests.directory.conftest import BACKENDS
from tests.integration.conftest import client_router, cluster_factory, integration_dir  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("point", ["in_transaction", "committed"])
@pytest_twisted.ensureDeferred
async def test_a_view_is_counted_once_after_kill_9_of_its_server(
    backend, point, request, tmp_path, monkeypatch
):
    if backend == "sqlite":
        location = {"backend": "sqlite", "path": str(tmp_path / "directory.sqlite3")}
    else:
        location = {"backend": "mysql", "url": request.getfixturevalue("mysql_url_factory")()}
    marker = tmp_path / "crashed-once"
    monkeypatch.setenv(CRASH_ENV, f"share_view:{point}:{marker}")
    cloud = request.getfixturevalue("cluster_factory")(
        3, overrides={"directory": {**location, "scrypt_n": 1024}}
    )
    router = request.getfixturevalue("client_router")(cloud.client_list, timeout=40.0)
    users = {}
    for who in ("owner", "viewer"):
        name = who + uuid.uuid4().hex[:6]
        keys = {k: base64.b64encode(os.urandom(32)).decode() for k in ("x25519", "ed25519")}
        await router.submit("register", {"username": name, "password": "password", "keys": keys})
        users[who] = await sign_in(router, {"username": name, "password": "password"})
    owner, viewer = users["owner"], users["viewer"]
    image_id = str(uuid.uuid4())
    share = base64.b64encode(os.urandom(92)).decode()
    put = {
        "token": owner["token"],
        "image_id": image_id,
        "viewer_id": viewer["user_id"],
        "share": share,
        "views": 3,
        "version": 1,
    }
    await router.submit("share_put", put)
    view = {"token": viewer["token"], "image_id": image_id, "owner_id": owner["user_id"]}
    reply = await router.submit("share_view", view)
    assert marker.exists(), "no server reached the crash point"
    assert len([s for s in cloud.servers.values() if not s.alive]) == 1
    assert reply["share"] == share and reply["used"] == 1 and reply["views_left"] == 2
    # The next view (a new request) sees exactly one view counted before it.
    assert (await router.submit("share_view", view))["used"] == 2
