// The cloudp2p web app: plain JavaScript, no build step, nothing from outside this daemon.
// Every string that comes from the daemon (user names, image names, messages) is put in the
// page as text (el() makes text nodes; nothing here assigns HTML).
"use strict";

const app = { csrf: null, me: null, viewSeconds: 10, maxUpload: 0, inbox: [], images: null, timer: null };

// -- small helpers ------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "on") {
      for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    } else if (key === "class") {
      node.className = value;
    } else if (value !== null && value !== undefined && value !== false) {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function fill(container, nodes, emptyText) {
  container.replaceChildren(...(nodes.length ? nodes : [el("p", { class: "empty" }, emptyText)]));
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  $("notice").hidden = true;
}

function notify(message) {
  const box = $("notice");
  box.textContent = message;
  box.hidden = false;
  $("error").hidden = true;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

class DaemonError extends Error {}

async function answer(response) {
  let body;
  try {
    body = await response.json();
  } catch (e) {
    throw new DaemonError(`The daemon sent an unreadable answer (HTTP ${response.status}).`);
  }
  if (!body.ok) throw new DaemonError((body.error && body.error.message) || "The daemon refused.");
  return body.result;
}

// One command of the daemon's table, with the same arguments the `cloudp2p` command sends.
async function run(command, args) {
  const response = await fetch(`/api/run/${encodeURIComponent(command)}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": app.csrf },
    body: JSON.stringify(args || {}),
  });
  return answer(response);
}

// Run an action from a button: errors go to the error bar, in the daemon's words.
function action(button, fn) {
  return async (event) => {
    if (event) event.preventDefault();
    if (button) button.disabled = true;
    try {
      await fn();
    } catch (e) {
      showError(e instanceof DaemonError ? e.message : `Something went wrong: ${e.message}`);
    } finally {
      if (button) button.disabled = false;
    }
  };
}

// -- screens ------------------------------------------------------------------------------------

function show(screen) {
  for (const section of document.querySelectorAll(".screen")) section.hidden = section.id !== `screen-${screen}`;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.screen === screen);
  app.screen = screen;
  const loaders = { images: loadImages, people: loadPeople, inbox: loadInbox, received: loadImages, status: loadStatus };
  if (loaders[screen]) action(null, loaders[screen])();
}

async function start() {
  const response = await fetch("/api/session");
  if (!response.ok) {
    let message = "This page is not open yet.";
    try { message = (await response.json()).error.message; } catch (e) { /* keep the default */ }
    $("locked-why").textContent = message;
    show("locked");
    return;
  }
  const session = await response.json();
  app.csrf = session.csrf;
  app.viewSeconds = session.view_seconds;
  app.maxUpload = session.max_upload;
  listen();
  await route();
}

// Which screen fits: register, sign in, or the app itself.
async function route() {
  const status = await run("status", {});
  app.me = status.me;
  const signedIn = Boolean(status.me.signed_in);
  $("nav").hidden = !signedIn;
  $("signout").hidden = !signedIn;
  $("who").textContent = signedIn ? `signed in as ${status.me.username}` : "";
  if (!status.me.username) {
    show("register");
  } else if (!signedIn) {
    $("signin-form").elements.username.value = status.me.username;
    show("signin");
  } else {
    show(app.screen && !["register", "signin", "locked"].includes(app.screen) ? app.screen : "images");
    loadInbox();
  }
}

// -- live updates (server-sent events) ----------------------------------------------------------

function listen() {
  const events = new EventSource("/api/events");
  events.addEventListener("change", (event) => {
    const section = JSON.parse(event.data).section;
    if (!app.me || !app.me.signed_in) return;
    if (section === "inbox") loadInbox();
    if (["images", "grants", "received", "outbox"].includes(section)) {
      if (app.screen === "images" || app.screen === "received") loadImages();
    }
  });
  events.addEventListener("progress", (event) => {
    const p = JSON.parse(event.data);
    if (app.uploading) progress(p.label, p.done, p.total);
  });
}

// -- my images ----------------------------------------------------------------------------------

function progress(label, done, total) {
  const box = $("upload");
  box.hidden = false;
  const pct = total ? Math.min(100, Math.round((100 * done) / total)) : 0;
  box.querySelector(".fill").style.width = `${pct}%`;
  box.querySelector(".label").textContent = `${label}: ${pct} %`;
}

function upload(file) {
  if (app.maxUpload && file.size > app.maxUpload) {
    showError(`${file.name} is larger than ${app.maxUpload} bytes; choose a smaller image.`);
    return;
  }
  app.uploading = true;
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/api/upload?name=${encodeURIComponent(file.name)}`);
  xhr.setRequestHeader("X-CSRF-Token", app.csrf);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.addEventListener("progress", (e) => progress(`sending ${file.name} to the daemon`, e.loaded, e.total));
  xhr.addEventListener("load", () => {
    app.uploading = false;
    $("upload").hidden = true;
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* below */ }
    if (!body || !body.ok) {
      showError((body && body.error && body.error.message) || `The upload failed (HTTP ${xhr.status}).`);
      return;
    }
    notify(`Encrypted ${body.result.name}: it is now hidden in a cover.`);
    loadImages();
  });
  xhr.addEventListener("error", () => {
    app.uploading = false;
    $("upload").hidden = true;
    showError("The upload did not reach the daemon (is it still running? is the file too large?).");
  });
  progress(`sending ${file.name} to the daemon`, 0, file.size);
  xhr.send(file);
}

async function loadImages() {
  const [images, inbox] = await Promise.all([run("images", {}), run("inbox", {})]);
  app.images = images;
  app.inbox = inbox.requests;
  renderOwned(images.owned);
  renderReceived(images.received, images.requests);
}

// What the owner knows of a viewer's use: the `used` count their last request carried.
function lastUsed(viewer, imageId) {
  const asked = app.inbox.filter((r) => r.from === viewer && r.image_id === imageId);
  asked.sort((a, b) => a.received_at - b.received_at);
  return asked.length ? asked[asked.length - 1].used : 0;
}

function renderOwned(owned) {
  const cards = owned.map((im) => {
    const publish = el("button", { class: im.published ? "" : "primary", "data-test": "publish" },
      im.published ? "Unpublish" : "Publish");
    publish.addEventListener("click", action(publish, async () => {
      await run(im.published ? "unpublish" : "publish", { image: im.image_id });
      notify(im.published ? `${im.name} is no longer offered.` : `${im.name} is now offered to others.`);
      await loadImages();
    }));
    const viewers = Object.entries(im.grants || {}).sort().map(([viewer, views]) => {
      const input = el("input", { type: "number", min: 0, max: 1000, value: views, "aria-label": `views for ${viewer}` });
      const set = el("button", { "data-test": "set-views" }, "Set views");
      set.addEventListener("click", action(set, async () => {
        const r = await run("set-views", { user: viewer, image: im.image_id, views: Number(input.value) });
        notify(`${r.viewer} may now view ${r.image_name} ${plural(r.views, "time")} in total (${r.delivery === "peer" ? "applied at once" : "queued until they sign in"}).`);
        await loadImages();
      }));
      const revoke = el("button", { class: "danger", "data-test": "revoke" }, "Revoke");
      revoke.addEventListener("click", action(revoke, async () => {
        const r = await run("revoke", { user: viewer, image: im.image_id });
        notify(`Revoked ${r.viewer}'s views of ${r.image_name} (${r.delivery === "peer" ? "applied at once" : "queued until they sign in"}).`);
        await loadImages();
      }));
      return el("div", { class: "row viewer-row", "data-viewer": viewer },
        el("span", { class: "grow" }, el("span", { class: "name" }, viewer), " ",
          el("span", { class: "meta" }, `views used ${lastUsed(viewer, im.image_id)} of ${views} (as of their last request)`)),
        input, set, revoke);
    });
    return el("article", { class: "card", "data-image": im.image_id },
      el("div", { class: "row" },
        el("span", { class: "name grow" }, im.name),
        el("span", { class: "state" }, im.published ? "published" : "private"),
        publish),
      el("div", { class: "pair" },
        el("figure", {}, el("img", { src: im.original, alt: `original of ${im.name}` }), el("figcaption", {}, "original (stays here)")),
        el("figure", {}, el("img", { src: im.encrypted, alt: `${im.name} hidden in its cover` }), el("figcaption", {}, "what others get: hidden in a cover"))),
      el("div", { class: "viewers" }, viewers.length ? viewers : el("p", { class: "empty" }, "Nobody has a copy yet.")));
  });
  fill($("owned"), cards, "You have no image yet: drop one above.");
}

// -- people online ------------------------------------------------------------------------------

async function loadPeople() {
  const r = await run("users", {});
  const people = r.users.filter((u) => !u.me).map((u) => {
    const thumbs = u.images.map((im) => {
      const views = el("input", { type: "number", min: 1, max: 1000, value: 2, "aria-label": `views of ${im.name}` });
      const ask = el("button", { class: "primary", "data-test": "request" }, "Request views");
      ask.addEventListener("click", action(ask, async () => {
        const q = await run("request", { user: u.username, image: im.image_id, views: Number(views.value) });
        notify(`Asked ${q.owner} for ${plural(q.views, "view")} of ${q.image_name} (${q.delivery === "peer" ? "sent" : "queued: they are offline"}).`);
      }));
      return el("div", { class: "thumb card", "data-image": im.image_id },
        im.thumbnail ? el("img", { src: im.thumbnail, alt: `thumbnail of ${im.name}` }) : el("div", { class: "empty" }, "no thumbnail"),
        el("span", { class: "name" }, im.name),
        el("div", { class: "row" }, views, ask));
    });
    return el("article", { class: "card", "data-user": u.username },
      el("div", { class: "name" }, u.username),
      thumbs.length ? el("div", { class: "thumbs" }, thumbs) : el("p", { class: "empty" }, "offers no image"));
  });
  fill($("people"), people, "Nobody else is online.");
}

// -- inbox --------------------------------------------------------------------------------------

async function loadInbox() {
  const r = await run("inbox", {});
  app.inbox = r.requests;
  const pending = r.requests.filter((q) => q.state === "pending");
  const badge = $("badge");
  badge.textContent = String(pending.length);
  badge.hidden = pending.length === 0;
  const rows = r.requests.slice().reverse().map((q) => {
    const parts = [
      el("span", { class: "grow" },
        el("span", { class: "name" }, q.from), " asks ",
        q.kind === "more" ? `${plural(q.views, "more view")} of ` : `${plural(q.views, "view")} of `,
        el("span", { class: "name" }, q.image_name),
        q.used ? el("span", { class: "meta" }, ` (has used ${q.used})`) : null),
      el("span", { class: "state" }, q.state),
    ];
    if (q.state === "pending") {
      const views = el("input", { type: "number", min: 1, max: 1000, value: q.views, "aria-label": "views to grant" });
      const enforced = el("input", { type: "checkbox", "data-test": "enforced", "aria-label": "enforced by the cloud" });
      const mode = el("label", { class: "meta", title: "the cloud counts every view; revoke works even on unviewed copies; viewing needs the cloud" },
        enforced, " enforced");
      const accept = el("button", { class: "primary", "data-test": "accept" }, "Accept");
      accept.addEventListener("click", action(accept, async () => {
        const args = { request_id: q.request_id, views: Number(views.value) };
        if (q.kind !== "more" && enforced.checked) args.enforced = true;
        const a = await run("accept", args);
        notify(a.kind === "more" ? `${a.viewer} may now view ${a.image_name} ${plural(a.views, "time")} in total.`
          : `Sent ${a.image_name} to ${a.viewer} with ${plural(a.views, "view")}.`);
        await loadInbox();
      }));
      const reject = el("button", { class: "danger", "data-test": "reject" }, "Reject");
      reject.addEventListener("click", action(reject, async () => {
        await run("reject", { request_id: q.request_id });
        notify("Rejected.");
        await loadInbox();
      }));
      parts.push(views, q.kind === "more" ? null : mode, accept, reject);
    }
    return el("div", { class: "card row", "data-request": q.request_id }, parts);
  });
  if (app.screen === "inbox") fill($("inbox"), rows, "No request.");
  else $("inbox").replaceChildren(...rows);
}

// -- received images and viewing ----------------------------------------------------------------

function renderReceived(received, requests) {
  const cards = received.map((im) => {
    const view = el("button", { class: "primary", "data-test": "view" }, "View");
    view.addEventListener("click", action(view, async () => {
      const v = await run("view", { image: im.image_id });
      display(v);
      await loadImages();
    }));
    const more = el("input", { type: "number", min: 1, max: 1000, value: 2, "aria-label": "more views" });
    const ask = el("button", { "data-test": "more-views" }, "Ask for more");
    ask.addEventListener("click", action(ask, async () => {
      const q = await run("more-views", { image: im.image_id, views: Number(more.value) });
      notify(`Asked ${q.owner} for ${plural(q.views, "more view")} of ${q.image_name}.`);
      await loadImages();
    }));
    return el("article", { class: "card row", "data-image": im.image_id },
      el("span", { class: "grow" }, el("span", { class: "name" }, im.name), " from ", el("span", { class: "name" }, im.owner)),
      el("span", { class: "state", "data-test": "views-left" }, `${plural(im.views_left, "view")} left`),
      el("span", { class: "meta", "data-test": "mode" }, im.mode === "enforced" ? "enforced" : "offline-capable"),
      view, more, ask);
  });
  fill($("received"), cards, "Nobody has shared an image with you yet: ask on the People screen.");
  const waiting = (requests || []).filter((q) => q.state !== "received").map((q) =>
    el("div", { class: "card row" },
      el("span", { class: "grow" }, el("span", { class: "name" }, q.image_name), " from ", el("span", { class: "name" }, q.owner)),
      el("span", { class: "state" }, q.state === "fetching" && q.total ? `fetching ${Math.round((100 * q.done) / q.total)} %` : q.state),
      q.error ? el("span", { class: "meta" }, q.error) : null));
  fill($("outbox"), waiting, "No request waiting.");
}

// Show a decoded image (or the cover) from memory, with a countdown; then forget it.
function display(v) {
  clearInterval(app.timer);
  const img = $("viewer-img");
  img.src = v.url;
  img.alt = v.shown === "cover" ? `the cover of ${v.name}` : v.name;
  img.dataset.shown = v.shown;
  $("viewer").hidden = false;
  $("viewer-title").textContent = v.shown === "cover" ? `${v.name}: no views left` : v.name;
  $("viewer-note").textContent = v.shown === "cover"
    ? "No views left: this is the cover the image was hidden in. Ask the owner for more views."
    : `${plural(v.views_left, "view")} left after this one.`;
  let left = Math.round(v.seconds || app.viewSeconds);
  const tick = () => {
    $("countdown").textContent = `closes in ${left} s`;
    if (left-- <= 0) closeViewer();
  };
  tick();
  app.timer = setInterval(tick, 1000);
}

function closeViewer() {
  clearInterval(app.timer);
  const img = $("viewer-img");
  img.removeAttribute("src");
  delete img.dataset.shown;
  $("viewer").hidden = true;
}

// -- status -------------------------------------------------------------------------------------

async function loadStatus() {
  const r = await run("status", {});
  const rows = [
    ["signed in as", r.me.username || "(nobody)"],
    ["session", r.me.signed_in ? "signed in" : "signed out"],
    ["peer port", r.me.peer || "-"],
    ["cloud", r.cloud.reachable ? "reachable" : "unreachable"],
    ["coordinator", r.cloud.coordinator !== undefined && r.cloud.coordinator !== null ? `server ${r.cloud.coordinator}` : "unknown"],
    ["servers", (r.cloud.servers || []).join("\n")],
  ];
  $("status").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { style: null }, ...String(v).split("\n").map((line) => el("div", {}, line)))]));
}

// -- wiring -------------------------------------------------------------------------------------

function wire() {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => show(tab.dataset.screen));
  const register = $("register-form");
  register.addEventListener("submit", action(register.querySelector("button"), async () => {
    const f = register.elements;
    await run("register", { username: f.username.value, password: f.password.value });
    await run("login", { username: f.username.value, password: f.password.value });
    f.password.value = "";
    await route();
  }));
  const signin = $("signin-form");
  signin.addEventListener("submit", action(signin.querySelector("button"), async () => {
    const r = await run("login", { password: signin.elements.password.value });
    signin.elements.password.value = "";
    if (r.applied && r.applied.length) notify(`While you were away: ${r.applied.join("; ")}`);
    await route();
  }));
  $("signout").addEventListener("click", action($("signout"), async () => {
    await run("logout", {});
    closeViewer();
    app.screen = null;
    await route();
  }));
  $("people-refresh").addEventListener("click", action($("people-refresh"), loadPeople));
  $("viewer-close").addEventListener("click", closeViewer);
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); e.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  wire();
  action(null, start)();
});
