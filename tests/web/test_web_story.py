"""The whole story in the web app, in real Chromium, on two real daemons and a real cloud.

alice and bob each have a browser context on their own daemon. Every step goes through the
page (clicks, a file picker, the live badge), and what the page shows is checked against the
files and the pixels themselves.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from .conftest import PASSWORD, expect

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
    path, original = web.image("harbour.png", 7)
    alice.set_input_files("#file", path)
    card = alice.locator("#owned article", has_text="harbour.png")
    expect(card).to_be_visible()
    for img in card.locator(".pair img").all():
        expect(img).to_have_js_property("complete", True)
    assert card.locator(".pair img").nth(0).evaluate("i => i.naturalWidth") == 64
    card.locator("[data-test=publish]").click()
    expect(card.locator(".state")).to_have_text("published")
    web.shot("alice", "web-my-images.png")

    # bob sees alice's thumbnail on the People screen and asks for 2 views
    bob.locator(".tab[data-screen=people]").click()
    offer = bob.locator("#people [data-user=alice] .thumb", has_text="harbour.png")
    expect(offer).to_be_visible()
    expect(offer.locator("img")).to_have_js_property("complete", True)
    assert offer.locator("img").evaluate("i => i.naturalWidth") > 0
    offer.locator("input").fill("2")
    offer.locator("[data-test=request]").click()
    expect(bob.locator("#notice")).to_contain_text("Asked alice for 2 views of harbour.png")
    web.shot("bob", "web-people.png")

    # alice's badge appears without a reload (server-sent events); she accepts
    expect(alice.locator("#badge")).to_have_text("1")
    alice.locator(".tab[data-screen=inbox]").click()
    request = alice.locator("#inbox [data-request]", has_text="harbour.png")
    expect(request.locator(".state")).to_have_text("pending")
    web.shot("alice", "web-inbox.png")
    request.locator("[data-test=accept]").click()
    expect(alice.locator("#notice")).to_contain_text("Sent harbour.png to bob with 2 views")
    expect(alice.locator("#badge")).to_be_hidden()

    # bob views twice: the decoded pixels in the page are the original's; the third is the cover
    bob.locator(".tab[data-screen=received]").click()
    left = bob.locator("#received [data-test=views-left]")
    expect(left).to_have_text("2 views left")
    assert _view(bob) == "image"
    assert np.array_equal(_page_pixels(bob), _rgb(original))
    web.shot("bob", "web-view.png")
    expect(left).to_have_text("1 view left")
    assert _view(bob) == "image"
    assert np.array_equal(_page_pixels(bob), _rgb(original))
    expect(left).to_have_text("0 views left")
    shown, src = _view_src(bob)
    assert shown == "cover"
    cover = _page_pixels(bob)
    assert cover.shape != _rgb(original).shape or not np.array_equal(cover, _rgb(original))
    expect(bob.locator("#viewer-note")).to_contain_text("No views left: this is the cover")
    web.shot("bob", "web-cover.png")
    shown_url = bob.url.rstrip("/") + src

    # bob asks for more; alice (badge again) accepts 2 more; bob views once
    bob.locator("#received [data-image] input").fill("2")
    bob.locator("#received [data-test=more-views]").click()
    expect(alice.locator("#badge")).to_have_text("1")
    alice.locator("#inbox [data-request]", has_text="more view").locator("[data-test=accept]").click()
    expect(left).to_have_text("2 views left")
    # meanwhile the countdown ended: the image left the page, and the daemon no longer serves it
    expect(bob.locator("#viewer")).to_be_hidden(timeout=10_000)
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
    expect(bob.locator("#notice")).to_contain_text("alice revoked your views of harbour.png")
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
