"""The web app in a real browser: Debian's Chromium driven by Playwright, two real client daemons
(alice, bob) and a real three-server cloud on SQLite, shared by the tests of this folder.

Chromium is ``/usr/bin/chromium`` (``apt-get install chromium``; `.ci/run` installs it). Without it,
or without the playwright package, the tests are skipped with the reason, except with ``CI=true``,
where they fail. Playwright never downloads a browser here: it launches that executable.

``CLOUDP2P_SCREENSHOTS=DIR`` makes the story test save its screenshots in DIR (`make screenshots`
refreshes docs/images/ that way); otherwise they go to the test's temporary directory.
``KEEP_TMP=1`` keeps homes and logs.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cloudp2p.errors import CloudP2PError
from cloudp2p.testing.client import ClientProcess

try:  # without playwright the `web` fixture skips (or, under CI=true, fails) with the reason
    from playwright.sync_api import expect
except ImportError:
    expect = None

CHROMIUM = os.environ.get("CLOUDP2P_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "web-password-123"
VIEW_SECONDS = 8.0  # long enough for a loaded machine to read the pixels before it closes
# Chromium resolves this made-up name to loopback: a DNS-rebinding page, for real.
REBIND_HOST = "rebind.example"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here) and "web" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.browser)


def _require_browser() -> None:
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "the playwright package is not installed (make install)"
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {problem}")
        pytest.skip(problem)


def png_bytes(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def photo_png(width: int = 144) -> bytes:
    here = os.path.dirname(os.path.dirname(__file__))
    with Image.open(os.path.join(here, "data", "rocket.jpg")) as im:
        small = im.convert("RGB").resize((width, round(width * im.height / im.width)), Image.LANCZOS)
    small.info.pop("icc_profile", None)  # no colour profile: the page shows the very pixel values
    out = io.BytesIO()
    small.save(out, format="PNG")
    return out.getvalue()


class WebWorld:
    """A cloud, two daemons, one browser with a context per user."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.cloud: Any = None
        self.clients: dict[str, ClientProcess] = {}
        self.playwright: Any = None
        self.browser: Any = None
        self.contexts: dict[str, Any] = {}
        self.pages: dict[str, Any] = {}
        self.shots = os.environ.get("CLOUDP2P_SCREENSHOTS") or os.path.join(workdir, "screenshots")
        os.makedirs(self.shots, exist_ok=True)

    def start(self) -> None:
        from playwright.sync_api import sync_playwright

        from cloudp2p.testing.cluster import LocalCluster

        directory = {"backend": "sqlite", "path": os.path.join(self.workdir, "directory.sqlite3")}
        for attempt in range(3):  # a chosen free port can be taken before the server binds it
            self.cloud = LocalCluster(
                os.path.join(self.workdir, f"cloud{attempt}"), 3, overrides={"directory": directory}
            )
            try:
                self.cloud.start(60.0)
                break
            except CloudP2PError:
                self.cloud.stop()
                if attempt == 2:
                    raise
        for name in ("alice", "bob"):
            client = ClientProcess(os.path.join(self.workdir, name), servers=self.cloud.client_list)
            client.init(web={"view_seconds": VIEW_SECONDS})
            client.start()
            self.clients[name] = client
        self.cloud.wait_converged(30.0)
        for client in self.clients.values():
            client.wait_ready(30.0)
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(
            executable_path=CHROMIUM, args=[f"--host-resolver-rules=MAP {REBIND_HOST} 127.0.0.1"]
        )
        for name in self.clients:
            context = self.browser.new_context(viewport={"width": 1100, "height": 760})
            context.set_default_timeout(20_000)
            self.contexts[name] = context
            self.pages[name] = context.new_page()

    def stop(self) -> None:
        for context in self.contexts.values():
            context.close()
        if self.browser is not None:
            self.browser.close()
        if self.playwright is not None:
            self.playwright.stop()
        for client in self.clients.values():
            client.stop(grace=5.0)
        if self.cloud is not None:
            self.cloud.stop()

    def logs(self) -> str:
        parts = [f"----- {n} daemon log -----\n{c.tail(30)}" for n, c in self.clients.items()]
        if self.cloud is not None:
            parts += [f"----- server {s} log -----\n{p.tail(10)}" for s, p in self.cloud.servers.items()]
        return "\n".join(parts)

    # -- helpers -----------------------------------------------------------------------------------

    def link(self, who: str) -> str:
        """The one-time link `cloudp2p web` prints (run for real)."""
        result = self.clients[who].run("web")
        assert result.ok, result.stderr
        return result.result["url"]

    def shot(self, who: str, name: str) -> str:
        path = os.path.join(self.shots, name)
        self.pages[who].screenshot(path=path)
        return path

    def signed_in(self, who: str) -> Any:
        """``who``'s page, registered and signed in (a test may run alone or after the story)."""
        page = self.pages[who]
        status = self.clients[who].run("status").result["me"]
        if status["signed_in"] and page.url.startswith("http"):
            return page
        page.goto(self.link(who))
        if not status["username"]:
            form = page.locator("#register-form")
            form.locator("input[name=username]").fill(who)
        elif not status["signed_in"]:
            form = page.locator("#signin-form")
        else:
            expect(page.locator("#who")).to_have_text(f"signed in as {who}")
            return page
        form.locator("input[name=password]").fill(PASSWORD)
        form.locator("button").click()
        expect(page.locator("#who")).to_have_text(f"signed in as {who}")
        return page

    def image(self, name: str, seed: int | None = None) -> tuple[str, bytes]:
        """A small PNG: random pixels from ``seed``, or (None) the rocket photo of tests/data, shrunk."""
        data = png_bytes(seed) if seed is not None else photo_png()
        path = os.path.join(self.workdir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path, data


@pytest.fixture(scope="package")
def web() -> Iterator[WebWorld]:
    _require_browser()
    workdir = tempfile.mkdtemp(prefix="cp2p-web-")
    world = WebWorld(workdir)
    try:
        world.start()
        yield world
    except BaseException:
        print(world.logs())
        raise
    finally:
        world.stop()
        if os.environ.get("KEEP_TMP", "") not in ("", "0"):
            print(f"\nKEEP_TMP: web homes and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
