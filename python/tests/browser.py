"""A page rendered in headless Chromium (Debian's ``chromium``), driven through the DevTools
protocol over ``--remote-debugging-pipe``: no websocket client, no driver, no download — only
the browser and the standard library. :func:`render` loads a local HTML file and returns what a
test checks: the DOM after load, every console message and uncaught exception, and a PNG
screenshot of the whole page.

The flags are the ones known to work on a closed network (no background connections that the
network would refuse and log as errors); each render gets a fresh, empty profile.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--hide-scrollbars", "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    """The browser: ``CHUNKMILL_CHROMIUM`` when set, else ``chromium`` on PATH."""
    return os.environ.get("CHUNKMILL_CHROMIUM") or shutil.which("chromium")


@dataclass
class Rendered:
    """What a page showed once loaded; ``requests`` lists every URL it asked for (the page
    itself first), so a test can tell that it is self-contained."""

    dom: str
    console: list[dict] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: bytes = b""

    def errors(self) -> list[str]:
        """Console messages of level error or warning-as-error, uncaught exceptions and failed
        loads, as text: a readable page has none."""
        out = [f"console.{m['level']}: {m['text']}" for m in self.console if m["level"] == "error"]
        return out + [f"exception: {e}" for e in self.exceptions]


class _Pipe:
    """The DevTools protocol over the two pipes Chromium reads (fd 3) and writes (fd 4): JSON
    messages each ended by a NUL byte."""

    def __init__(self, to_browser: int, from_browser: int, deadline: float) -> None:
        self.out = os.fdopen(to_browser, "wb", buffering=0)
        self.inp = os.fdopen(from_browser, "rb", buffering=0)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []
        self.deadline = deadline

    def _read(self) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > self.deadline:
                raise TimeoutError("chromium did not answer in time")
            chunk = self.inp.read(65536)
            if not chunk:
                raise ConnectionError("chromium closed its DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        request = {"id": self.next_id, "method": method, "params": params}
        if session:
            request["sessionId"] = session
        self.out.write(json.dumps(request).encode() + b"\0")
        while True:
            message = self._read()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, session: str) -> None:
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method and e.get("sessionId") == session:
                    del self.events[i]
                    return
            self.events.append(self._read())


def render(page: Path, width: int = 1200, timeout: float = 30.0) -> Rendered:
    """Loads ``page`` (a local file) in headless Chromium and returns its DOM, console
    messages, uncaught exceptions and a full-page PNG screenshot."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium: install Debian's chromium or set CHUNKMILL_CHROMIUM")
    profile = tempfile.mkdtemp(prefix="chunkmill-chromium-")
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()

    def as_fds_3_and_4() -> None:
        # In the child only: Chromium reads commands on fd 3 and writes answers on fd 4.
        os.dup2(to_r, 3)
        os.dup2(from_w, 4)

    try:
        proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=as_fds_3_and_4,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    finally:
        os.close(to_r)
        os.close(from_w)
    pipe = _Pipe(to_w, from_r, time.monotonic() + timeout)
    try:
        return _load(pipe, page, width)
    finally:
        try:
            pipe.call("Browser.close")
        except (ConnectionError, RuntimeError, TimeoutError, OSError):
            proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _load(pipe: _Pipe, page: Path, width: int) -> Rendered:
    target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
    session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        pipe.call(f"{domain}.enable", session)
    pipe.call("Emulation.setDeviceMetricsOverride", session, width=width, height=800,
              deviceScaleFactor=1, mobile=False)
    pipe.call("Page.navigate", session, url=page.resolve().as_uri())
    pipe.wait_for("Page.loadEventFired", session)
    height = pipe.call("Runtime.evaluate", session, returnByValue=True,
                       expression="document.documentElement.scrollHeight")["result"]["value"]
    shot = pipe.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                     clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
    dom = pipe.call("Runtime.evaluate", session, returnByValue=True,
                    expression="document.documentElement.outerHTML")["result"]["value"]
    rendered = Rendered(dom=dom, screenshot=base64.b64decode(shot["data"]))
    for e in pipe.events:
        params = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            rendered.console.append({"level": "error" if params.get("type") in ("error", "assert") else params.get("type"),
                                     "text": text})
        elif e.get("method") == "Log.entryAdded":
            entry = params.get("entry", {})
            rendered.console.append({"level": entry.get("level"), "text": f"{entry.get('text')} {entry.get('url', '')}".strip()})
        elif e.get("method") == "Network.requestWillBeSent":
            rendered.requests.append(params.get("request", {}).get("url", ""))
        elif e.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            rendered.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))
    return rendered
