"""``make demo``: the whole product on one machine, as a readable transcript.

Starts a local cloud of three servers (the embedded SQLite directory) and two
client daemons, alice and bob, in a temporary directory, and runs the story
with the real `cloudp2p` command: register, encrypt, publish, discover,
request two views, accept, view twice, a third view shows the cover, more
views, the owner revokes while bob is offline, bob signs in and the
revocation applies. The coordinator is killed (kill -9) in the middle; the
story goes on. The images produced are copied to an output directory that is
printed at the end; every process the demo started is stopped, even on
Ctrl-C, an error or the time limit (``--timeout``).

    python -m cloudp2p.tools.demo [--timeout 300] [--keep] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from typing import Any, TextIO

from cloudp2p.errors import CloudP2PError
from cloudp2p.testing.client import ClientProcess, CommandResult

PASSWORDS = {"alice": "alice-demo-password", "bob": "bob-demo-password"}


class DemoError(CloudP2PError):
    """The demo could not complete."""


class DemoTimeout(BaseException):  # noqa: N818 - not an error class: it unwinds the demo like Ctrl-C
    pass


def make_secret_image(path: str) -> None:
    """A small picture to hide: a sun over hills with a caption (made here, no file needed)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (192, 128), (135, 190, 235))
    draw = ImageDraw.Draw(img)
    draw.ellipse((130, 12, 172, 54), fill=(250, 210, 60))
    draw.polygon([(0, 128), (0, 80), (60, 55), (120, 90), (192, 60), (192, 128)], fill=(70, 140, 70))
    draw.rectangle((8, 8, 110, 26), fill=(255, 255, 255))
    draw.text((12, 11), "alice's secret", fill=(0, 0, 0))
    img.save(path, format="PNG")


class Transcript:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self.step_no = 0

    def step(self, text: str) -> None:
        self.step_no += 1
        self.out.write(f"\n[{time.monotonic() - self.started:6.1f}s] {self.step_no}. {text}\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.out.write(textwrap.indent(text.rstrip("\n"), "      ") + "\n")
        self.out.flush()

    def command(self, who: str, result: CommandResult, *, secret: bool = False) -> None:
        shown = " ".join(result.argv) + ("  (password on stdin)" if secret else "")
        self.out.write(f"    {who}$ cloudp2p {shown}\n")
        body = result.stdout if result.ok else result.stderr
        if result.ok and result.stderr.strip():
            # the progress bar (printed on stderr): show each transfer's last line
            last: dict[str, str] = {}
            for line in result.stderr.splitlines():
                if " [" in line:
                    last[line.split(" [", 1)[0]] = line
            for line in last.values():
                self.note(line)
        self.note(body or "(no output)")
        if not result.ok:
            self.note(f"(exit code {result.code})")


class Demo:
    def __init__(self, workdir: str, outdir: str, transcript: Transcript) -> None:
        self.workdir = workdir
        self.outdir = outdir
        self.t = transcript
        self.cloud: Any = None
        self.clients: dict[str, ClientProcess] = {}

    # -- helpers ---------------------------------------------------------------------------------

    def run(self, who: str, *args: str, expect_ok: bool = True, password: bool = False) -> dict[str, Any]:
        """Run a command as the user would, print it and its text output in the transcript."""
        client = self.clients[who]
        pw = PASSWORDS[who] if password else None
        shown = client.run(*args, password=pw, json=False)
        self.t.command(who, shown, secret=password)
        if shown.ok != expect_ok:
            raise DemoError(
                f"`cloudp2p {' '.join(args)}` for {who} exited with {shown.code}:\n{shown.stderr}"
            )
        return {"ok": shown.ok, "stdout": shown.stdout}

    def query(self, who: str, *args: str) -> dict[str, Any]:
        """A --json command whose result the demo reads (not printed)."""
        result = self.clients[who].run(*args)
        if not result.ok:
            raise DemoError(f"`cloudp2p {' '.join(args)}` for {who} failed: {result.stderr}")
        return result.result

    def keep(self, path: str, name: str) -> str:
        target = os.path.join(self.outdir, name)
        shutil.copyfile(path, target)
        return target

    # -- the story -------------------------------------------------------------------------------

    def start_cloud(self) -> None:
        from cloudp2p.testing.cluster import LocalCluster

        self.t.step("Start a local cloud: three servers, the directory in an embedded SQLite file")
        directory = os.path.join(self.workdir, "cloud")
        for attempt in range(3):  # a free port can be taken between choosing it and binding it
            self.cloud = LocalCluster(
                directory + (f"-{attempt}" if attempt else ""),
                3,
                overrides={
                    "directory": {
                        "backend": "sqlite",
                        "path": os.path.join(self.workdir, "directory.sqlite3"),
                    }
                },
            )
            try:
                self.cloud.start(60.0)
                break
            except CloudP2PError:
                self.cloud.stop()
                if attempt == 2:
                    raise
        coordinator = self.cloud.wait_converged(30.0)
        servers = ", ".join(f"{sid}@{h}:{p}" for sid, (h, p) in sorted(self.cloud.client_addresses.items()))
        self.t.note(
            f"servers (client sockets): {servers}\nthe servers elected server {coordinator} coordinator"
        )

    def start_client(self, name: str) -> None:
        client = self.clients.get(name)
        if client is None:
            client = ClientProcess(os.path.join(self.workdir, name), servers=self.cloud.client_list)
            client.init()
            self.clients[name] = client
        client.start()
        port = client.wait_ready(30.0)
        self.t.note(f"{name}'s daemon: home {client.home}, peer UDP port {port}, control socket control.sock")

    def story(self) -> None:
        self.start_cloud()
        self.t.step("Start two client daemons (twistd -n cloudp2p-client --home DIR)")
        for name in ("alice", "bob"):
            self.start_client(name)

        self.t.step("Register and sign in (each gets a globally unique id)")
        for name in ("alice", "bob"):
            self.run(name, "register", name, password=True)
            self.run(name, "login", password=True)

        self.t.step("alice encrypts a picture: it goes to the cloud and comes back hidden in a cover")
        secret = os.path.join(self.workdir, "holiday.png")
        make_secret_image(secret)
        self.t.note(f"the secret picture: {self.keep(secret, 'holiday-original.png')}")
        self.run("alice", "encrypt", secret)
        own = self.query("alice", "images")["owned"][0]
        self.t.note(
            f"alice's copy, hidden in its cover: {self.keep(own['encrypted'], 'holiday-encrypted.png')}"
        )

        self.t.step("alice publishes it; bob discovers who is online and what they offer")
        self.run("alice", "publish", "holiday.png")
        self.run("bob", "users")

        coordinator = self.cloud.coordinator()
        self.t.step(f"kill -9 the coordinator (server {coordinator}) in the middle of the story")
        self.cloud.servers[coordinator].kill()
        survivors = {s for s in self.cloud.servers if s != coordinator}
        new = self.cloud.wait_converged(30.0, members=survivors)
        self.t.note(
            f"servers {sorted(survivors)} noticed and elected server {new}; clients see nothing of it"
        )

        self.t.step("bob asks alice for 2 views; alice finds the request in her inbox and accepts")
        self.run("bob", "request", "alice", "holiday.png", "--views", "2")
        request_id = self.query("alice", "inbox")["requests"][0]["request_id"]
        self.run("alice", "inbox")
        self.run("alice", "accept", request_id)
        self.run("bob", "images")

        self.t.step("bob views it twice; the third view shows only the cover")
        for _ in range(3):
            self.run("bob", "view", "holiday.png")
        self.t.note("(each view wrote a file under bob's home; they are listed at the end)")

        self.t.step("bob asks for more views; alice accepts; bob can see it again")
        self.run("bob", "more-views", "holiday.png", "2")
        pending = [r for r in self.query("alice", "inbox")["requests"] if r["state"] == "pending"]
        self.run("alice", "accept", pending[0]["request_id"])
        self.run("bob", "view", "holiday.png")

        self.t.step("bob goes offline; alice revokes his views: the change waits in the directory")
        self.run("bob", "shutdown")
        if self.clients["bob"].wait_exit(15.0) is None:
            raise DemoError("bob's daemon did not stop")
        self.run("alice", "revoke", "bob", "holiday.png")

        self.t.step("bob comes back and signs in: the revocation applies; his next view is the cover")
        self.start_client("bob")
        self.run("bob", "login", password=True)
        self.run("bob", "images")
        self.run("bob", "view", "holiday.png")

        self.t.step("status: who we are, the cloud's coordinator and servers")
        self.run("alice", "status")
        views_dir = os.path.join(self.clients["bob"].home, "views")
        for name in sorted(os.listdir(views_dir)):
            self.keep(os.path.join(views_dir, name), f"bob-{name}")

    def cleanup(self) -> None:
        for client in self.clients.values():
            client.stop(grace=5.0)
        if self.cloud is not None:
            self.cloud.stop()


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudp2p.tools.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="stop after this many seconds (300)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (homes, logs)")
    parser.add_argument("--out", help="where to copy the images produced (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = out or sys.stdout
    workdir = tempfile.mkdtemp(prefix="cloudp2p-demo-")
    outdir = os.path.abspath(args.out) if args.out else tempfile.mkdtemp(prefix="cloudp2p-demo-images-")
    os.makedirs(outdir, exist_ok=True)
    transcript = Transcript(out)
    demo = Demo(workdir, outdir, transcript)

    def on_alarm(signum: int, frame: Any) -> None:
        raise DemoTimeout()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt()

    old_alarm = signal.signal(signal.SIGALRM, on_alarm)
    old_term = signal.signal(signal.SIGTERM, on_term)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    code = 0
    try:
        out.write(f"cloudp2p demo: working directory {workdir}\n")
        demo.story()
        out.write(f"\nThe demo completed. The images it produced are in {outdir}:\n")
        for name in sorted(os.listdir(outdir)):
            out.write(f"    {os.path.join(outdir, name)}\n")
    except DemoTimeout:
        out.write(f"\ncloudp2p demo: stopped after the time limit of {args.timeout:g} s\n")
        code = 1
    except KeyboardInterrupt:
        out.write("\ncloudp2p demo: interrupted\n")
        code = 130
    except CloudP2PError as e:
        out.write(f"\ncloudp2p demo: failed: {e}\n")
        for name, client in demo.clients.items():
            out.write(f"--- {name}'s daemon log (last lines) ---\n{client.tail(15)}\n")
        code = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            demo.cleanup()
        finally:
            signal.signal(signal.SIGALRM, old_alarm)
            signal.signal(signal.SIGTERM, old_term)
            if args.keep:
                out.write(f"kept the working directory {workdir}\n")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
            if code != 0 and not args.out:
                shutil.rmtree(outdir, ignore_errors=True)  # a story cut short leaves nothing behind
            out.write("every process the demo started has been stopped.\n")
            out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
