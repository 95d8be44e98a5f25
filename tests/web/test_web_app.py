"""The web app in real Chromium, on two real daemons and a real cloud.

First the whole story: alice and bob each have a browser context on their own daemon; every step
goes through the page (clicks, a file picker, the live badge), and what the page shows is checked
against the files and the pixels themselves.

Then the refusals. Requests are made byte for byte with http.client (a foreign Host, a foreign or
missing Origin, no or a wrong CSRF token, no or a wrong cookie) against alice's real daemon; each
is refused (421 or 403) and her home is byte-identical afterwards. The same request with everything
right goes through, so the test would see a check that lets too much pass. In the browser: a
DNS-rebinding name (Chromium resolves it to 127.0.0.1) gets 421, and an image name holding markup
is shown as text and runs nothing.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import io
import json
import os
import threading
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from .conftest import PASSWORD, REBIND_HOST, expect

PIXELS_JS = """() => {
  const img = document.getElementById('viewer-img');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  return {w: c.width, h: c.height, data: Array.from(g.getImageData(0, 0, c.width, c.height).data)};
}"""
SHOWN_JS = """() => {
  const img = document.getElementById('viewer-img');
  const src = img.getAttribute('src');
  return src && img.complete && img.naturalWidth > 0 ? [img.dataset.shown, src] : null;
}"""


def _rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _page_pixels(page) -> np.ndarray:
    got = page.evaluate(PIXELS_JS)
    return np.array(got["data"], dtype=np.uint8).reshape(got["h"], got["w"], 4)[:, :, :3]


def _view(page) -> str:
    """Click View on the one received image; wait until the viewer shows it; returns image|cover."""
    return _view_src(page)[0]


def _view_src(page) -> tuple[str, str]:
    """``_view``, and the address of the decoded image."""
    if page.locator("#viewer").is_visible():
        page.locator("#viewer-close").click()
    page.locator("#received [data-test=view]").click()
    handle = page.wait_for_function(SHOWN_JS)
    expect(page.locator("#countdown")).to_contain_text("closes in")
    shown, src = handle.json_value()
    return shown, src


def _ended(page, url: str) -> bool:
    """The daemon forgot the decoded image shortly after the countdown (polled for at most 10 s)."""
    for _ in range(50):
        response = page.request.get(url)
        if response.status == 404 and "This view has ended" in response.text():
            return True
        page.wait_for_timeout(200)
    return False


def _register(web, who: str) -> None:
    page = web.pages[who]
    page.goto(web.link(who))
    assert page.url.endswith("/"), page.url  # the ticket is gone from the address bar
    form = page.locator("#register-form")
    form.locator("input[name=username]").fill(who)
    form.locator("input[name=password]").fill(PASSWORD)
    form.locator("button").click()
    expect(page.locator("#who")).to_have_text(f"signed in as {who}")


def test_whole_story_in_the_browser(web):
    alice, bob = web.pages["alice"], web.pages["bob"]
    # register and sign in, each from the one-time link `cloudp2p web` printed
    _register(web, "alice")
    _register(web, "bob")

    # alice encrypts by upload (the file picker), sees original and cover side by side, publishes
    path, original = web.image("launch.png")
    alice.set_input_files("#file", path)
    card = alice.locator("#owned article", has_text="launch.png")
    expect(card).to_be_visible()
    for img in card.locator(".pair img").all():
        expect(img).to_have_js_property("complete", True)
    assert card.locator(".pair img").nth(0).evaluate("i => i.naturalWidth") == _rgb(original).shape[1]
    card.locator("[data-test=publish]").click()
    expect(card.locator(".state")).to_have_text("published")
    web.shot("alice", "web-my-images.png")

    # bob sees alice's thumbnail on the People screen and asks for 2 views
    bob.locator(".tab[data-screen=people]").click()
    offer = bob.locator("#people [data-user=alice] .thumb", has_text="launch.png")
    expect(offer).to_be_visible()
    expect(offer.locator("img")).to_have_js_property("complete", True)
    assert offer.locator("img").evaluate("i => i.naturalWidth") > 0
    offer.locator("input").fill("2")
    offer.locator("[data-test=request]").click()
    expect(bob.locator("#notice")).to_contain_text("Asked alice for 2 views of launch.png")
    web.shot("bob", "web-people.png")

    # alice's badge appears without a reload (server-sent events); she accepts
    expect(alice.locator("#badge")).to_have_text("1")
    alice.locator(".tab[data-screen=inbox]").click()
    request = alice.locator("#inbox [data-request]", has_text="launch.png")
    expect(request.locator(".state")).to_have_text("pending")
    web.shot("alice", "web-inbox.png")
    request.locator("[data-test=enforced]").check()  # the cloud counts bob's views (issue 17)
    request.locator("[data-test=accept]").click()
    expect(alice.locator("#notice")).to_contain_text("Sent launch.png to bob with 2 views")
    expect(alice.locator("#badge")).to_be_hidden()

    # bob views twice: the decoded pixels in the page are the original's; the third is the cover
    bob.locator(".tab[data-screen=received]").click()
    left = bob.locator("#received [data-test=views-left]")
    expect(left).to_have_text("2 views left")
    expect(bob.locator("#received [data-test=mode]")).to_have_text("enforced")
    assert _view(bob) == "image"
    web.shot("bob", "web-view.png")
    assert np.array_equal(_page_pixels(bob), _rgb(original))
    expect(left).to_have_text("1 view left")
    assert _view(bob) == "image"
    assert np.array_equal(_page_pixels(bob), _rgb(original))
    expect(left).to_have_text("0 views left")
    shown, src = _view_src(bob)
    assert shown == "cover"
    web.shot("bob", "web-cover.png")
    cover = _page_pixels(bob)
    assert cover.shape != _rgb(original).shape or not np.array_equal(cover, _rgb(original))
    expect(bob.locator("#viewer-note")).to_contain_text("No views left: this is the cover")
    shown_url = bob.url.rstrip("/") + src

    # bob asks for more; alice (badge again) accepts 2 more; bob views once
    bob.locator("#received [data-image] input").fill("2")
    bob.locator("#received [data-test=more-views]").click()
    expect(alice.locator("#badge")).to_have_text("1")
    alice.locator("#inbox [data-request]", has_text="more view").locator("[data-test=accept]").click()
    expect(left).to_have_text("2 views left")
    # meanwhile the countdown ended: the image left the page, and the daemon no longer serves it
    expect(bob.locator("#viewer")).to_be_hidden(timeout=15_000)
    assert _ended(bob, shown_url)
    assert _view(bob) == "image"
    expect(left).to_have_text("1 view left")

    # bob signs out; alice revokes while he is offline (queued in the directory)
    bob.locator("#signout").click()
    expect(bob.locator("#screen-signin")).to_be_visible()
    alice.locator(".tab[data-screen=images]").click()
    viewer = alice.locator("#owned [data-viewer=bob]")
    expect(viewer).to_contain_text("views used")
    viewer.locator("[data-test=revoke]").click()
    expect(alice.locator("#notice")).to_contain_text("queued until they sign in")

    # bob signs in again: the revocation applies; his copy shows the cover
    bob.locator("#signin-form input[name=password]").fill(PASSWORD)
    bob.locator("#signin-form button").click()
    expect(bob.locator("#notice")).to_contain_text("alice revoked your views of launch.png")
    bob.locator(".tab[data-screen=received]").click()
    expect(left).to_have_text("0 views left")
    assert _view(bob) == "cover"

    # status screen; and no web view ever wrote a decoded image to a file
    alice.locator(".tab[data-screen=status]").click()
    expect(alice.locator("#status")).to_contain_text("coordinator")
    expect(alice.locator("#status")).to_contain_text("server")
    web.shot("alice", "web-status.png")
    assert os.listdir(os.path.join(web.clients["bob"].home, "views")) == []
    assert os.listdir(os.path.join(web.clients["alice"].home, "uploads")) == []


# -- refusals ------------------------------------------------------------------------------------


def _port(web, who: str) -> int:
    return urlsplit(web.pages[who].url).port


def _call(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        raw = response.read()
        headers_back = {k.lower(): v for k, v in response.getheaders()}
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"raw": raw.decode("utf-8", "replace")}
        return response.status, {"body": payload, "headers": headers_back}
    finally:
        conn.close()


def _snapshot(home: str) -> dict[str, bytes]:
    out = {}
    for root, _dirs, files in os.walk(home):
        for name in files:
            if name.startswith("control.sock"):
                continue
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.join(root, name)] = f.read()
    return out


def test_foreign_host_origin_missing_csrf_or_cookie_are_refused_and_change_nothing(web):
    page = web.signed_in("alice")
    alice = web.clients["alice"]
    path, _ = web.image("guarded.png", 11)
    image_id = alice.run("encrypt", path).result["image_id"]
    assert alice.run("publish", image_id).ok
    port = _port(web, "alice")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == f"cloudp2p_session_{port}"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    here = f"127.0.0.1:{port}"
    good = {
        "Host": here,
        "Origin": f"http://{here}",
        "Cookie": f"{cookie['name']}={cookie['value']}",
        "Content-Type": "application/json",
    }
    status, session = _call(port, "GET", "/api/session", good)
    assert status == 200
    good["X-CSRF-Token"] = session["body"]["csrf"]
    body = json.dumps({"image": image_id}).encode()

    def without(key: str) -> dict[str, str]:
        return {k: v for k, v in good.items() if k != key}

    refused = {
        "foreign Host": ({**good, "Host": f"evil.example:{port}"}, 421),
        "Host with another port": ({**good, "Host": f"127.0.0.1:{port + 1}"}, 421),
        "no Host": (without("Host"), 421),
        "foreign Origin": ({**good, "Origin": "http://evil.example"}, 403),
        "no Origin": (without("Origin"), 403),
        "no CSRF header": (without("X-CSRF-Token"), 403),
        "wrong CSRF header": ({**good, "X-CSRF-Token": "x" * 43}, 403),
        "no cookie": (without("Cookie"), 403),
        "wrong cookie": ({**good, "Cookie": f"{cookie['name']}={'y' * 43}"}, 403),
        "cross-site fetch": ({**good, "Sec-Fetch-Site": "cross-site"}, 403),
    }
    before = _snapshot(alice.home)
    for why, (headers, expected) in refused.items():
        status, answer = _call(port, "POST", "/api/run/unpublish", headers, body)
        assert status == expected, (why, status, answer)
        assert answer["body"]["ok"] is False and answer["body"]["error"]["message"], why
        assert "Traceback" not in json.dumps(answer["body"]), why
        for header in ("content-security-policy", "x-content-type-options", "referrer-policy"):
            assert header in answer["headers"], (why, header)
    assert _snapshot(alice.home) == before
    published = {im["image_id"]: im["published"] for im in alice.run("images").result["owned"]}
    assert published[image_id] is True

    # reading needs the cookie too, and a foreign Host gets nothing, not even the page
    assert _call(port, "POST", "/api/run/images", without("Cookie"), b"{}")[0] == 403
    assert _call(port, "GET", "/api/events", without("Cookie"))[0] == 403
    assert _call(port, "GET", "/", {"Host": f"evil.example:{port}"})[0] == 421
    # a used or made-up ticket opens nothing
    status, answer = _call(port, "GET", "/auth?ticket=" + "z" * 43, {"Host": here})
    assert status == 403 and "set-cookie" not in answer["headers"]

    # the control: the very same request with everything right goes through
    status, answer = _call(port, "POST", "/api/run/unpublish", good, body)
    assert status == 200 and answer["body"]["result"]["published"] is False, answer
    assert _snapshot(alice.home) != before
    # errors read like the CLI's, never a stack trace
    status, answer = _call(port, "POST", "/api/run/unpublish", good, b'{"image": "no-such-image"}')
    cli = alice.run("unpublish", "no-such-image")
    assert status == 409 and answer["body"]["error"]["message"] == cli.error["message"]
    status, answer = _call(port, "POST", "/api/run/unpublish", good, b"{not json")
    assert status == 400 and "not valid JSON" in answer["body"]["error"]["message"]
    # a page may not run a command outside the web's set (no shutdown, no encrypt of any path)
    for name, args in (("shutdown", {}), ("encrypt", {"path": "/etc/hostname"}), ("web", {})):
        status, answer = _call(port, "POST", f"/api/run/{name}", good, json.dumps(args).encode())
        assert status == 404, (name, status, answer)
    # a body larger than the largest image is cut off, not buffered
    huge = {**good, "Content-Type": "application/octet-stream"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.putrequest("POST", "/api/upload?name=huge.png", skip_host=True)
    for key, value in huge.items():
        conn.putheader(key, value)
    conn.putheader("Content-Length", str(30 * 1024 * 1024))
    conn.endheaders()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        for _ in range(64):  # the daemon hangs up after the first chunk; 4 MiB at most are sent
            conn.send(b"\0" * 65536)
        conn.getresponse().read()
    conn.close()
    spool = os.path.join(alice.home, "uploads")
    assert not os.path.exists(spool) or os.listdir(spool) == []
    # the link, as a person reads it
    text = alice.run("web", json=False)
    assert text.ok and f"Open http://127.0.0.1:{port}/auth?ticket=" in text.stdout and "once" in text.stdout
    assert alice.alive


CROSS_SITE_JS = """async ([url, body]) => {
  try {  // the answer is blocked (Cross-Origin-Resource-Policy): only the request matters here
    await fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include',
                      headers: {'Content-Type': 'text/plain'}, body});
  } catch (e) { /* expected */ }
  return document.cookie;
}"""


class _PlainPage(http.server.BaseHTTPRequestHandler):
    """Another local web server (a dev server, another app): one harmless page."""

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        body = b"<!doctype html><p>another local app"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_page_on_another_local_port_changes_nothing(web):
    """Another local web server's page is same-site (ports do not count), so SameSite=Strict
    alone does not keep it out: its request reaches the daemon, is refused, and changes nothing."""
    alice = web.clients["alice"]
    page = web.signed_in("alice")
    port = _port(web, "alice")
    path, _ = web.image("same-site.png", 17)
    image_id = alice.run("encrypt", path).result["image_id"]
    assert alice.run("publish", image_id).ok
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PlainPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    evil = page.context.new_page()
    try:
        evil.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        before = _snapshot(alice.home)
        seen = alice.log_text().count("refused POST /api/run/unpublish: 403")
        url = f"http://127.0.0.1:{port}/api/run/unpublish"
        assert evil.evaluate(CROSS_SITE_JS, [url, json.dumps({"image": image_id})]) == ""  # HttpOnly
        for _ in range(50):  # the daemon logs the refusal: the request did reach it
            if alice.log_text().count("refused POST /api/run/unpublish: 403") > seen:
                break
            evil.wait_for_timeout(100)
        else:
            raise AssertionError("the cross-site request never reached the daemon")
        assert _snapshot(alice.home) == before
        assert {i["image_id"]: i["published"] for i in alice.run("images").result["owned"]}[image_id]
    finally:
        evil.close()
        server.shutdown()
        server.server_close()


def test_rebinding_name_gets_421_in_the_browser(web):
    web.signed_in("alice")
    port = _port(web, "alice")
    probe = web.contexts["alice"].new_page()
    try:
        response = probe.goto(f"http://{REBIND_HOST}:{port}/")
        assert response.status == 421
        assert "loopback" in probe.content()
        # the page itself is served with the security headers
        response = probe.goto(f"http://127.0.0.1:{port}/")
        headers = response.headers
        assert headers["content-security-policy"].startswith("default-src 'self'")
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
    finally:
        probe.close()


DROP_JS = """([name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, {type: 'image/png'}));
  return data;
}"""
WATCH_PROGRESS_JS = """() => {
  window.__progress = [];
  const label = document.querySelector('#upload .label');
  new MutationObserver(() => window.__progress.push(label.textContent))
    .observe(label, {childList: true, characterData: true, subtree: true});
}"""


def test_peer_image_name_with_markup_shows_as_text(web):
    """Uploaded by drag and drop (with the progress bar), named with markup that must stay text."""
    alice, bob = web.signed_in("alice"), web.signed_in("bob")
    name = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">.png'
    _, data = web.image("markup.png", 13)
    alice.locator(".tab[data-screen=images]").click()
    alice.evaluate(WATCH_PROGRESS_JS)
    files = alice.evaluate_handle(DROP_JS, [name, base64.b64encode(data).decode()])
    alice.dispatch_event("#drop", "drop", {"dataTransfer": files})
    card = alice.locator("#owned article", has_text="<script>")
    expect(card).to_be_visible()
    seen = " | ".join(alice.evaluate("window.__progress"))
    assert f"sending {name} to the daemon" in seen, seen  # the browser's upload
    assert f"uploading {name}" in seen, seen  # the daemon's progress, over the event stream
    card.locator("[data-test=publish]").click()
    expect(card.locator(".state")).to_have_text("published")
    bob.locator(".tab[data-screen=people]").click()
    bob.locator("#people-refresh").click()
    shown = bob.locator("#people .thumb .name", has_text="<script>")
    expect(shown).to_have_text(name)
    for page in (alice, bob):
        assert page.evaluate("window.__pwned") is None
        assert page.locator("main script, main img[src=x]").count() == 0
