"""A real browser for tests: Debian's chromium, headless, driven over the DevTools protocol.

The protocol runs over ``--remote-debugging-pipe`` (messages are JSON, each ended by a NUL, the browser
reads fd 3 and writes fd 4), so no port and no websocket client are needed. Clicks are real input
events (``Input.dispatchMouseEvent``) at an element's on-screen centre.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Any

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--remote-debugging-pipe", "--window-size=1400,900"]
REPLY_TIMEOUT = 30.0
START_TIMEOUT = 20.0  # a browser that has started answers Browser.getVersion in well under a second
START_ATTEMPTS = 2


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self) -> None:
        binary = shutil.which("chromium")
        if binary is None:
            raise BrowserError("chromium is not installed (setup.sh installs it)")
        # A browser that never answers its first command (seen once in a CI run: 30 s without a reply,
        # while the same test passed in every run before and after) is a harness failure, not the page's:
        # it is started once more. Its stderr is kept, and shown if the second start fails too.
        for attempt in range(START_ATTEMPTS):
            self._launch(binary)
            try:
                self.send("Browser.getVersion", session=False, timeout=START_TIMEOUT)
                return
            except BrowserError as exc:
                log = self._stderr_tail()
                self.kill()
                if attempt == START_ATTEMPTS - 1:
                    raise BrowserError(f"chromium did not start ({exc}); its stderr ended with:\n{log}") from None

    def _launch(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="muslin-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def plumbing() -> None:  # in the child: the protocol's fds are 3 (in) and 4 (out)
            # out of the way first: either pipe end may itself be fd 3 or 4
            high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 100)
            high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 100)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        # 3 and 4 are kept open in the child (the fds closed after plumbing() are the others)
        with open(os.path.join(self.profile, "stderr.log"), "wb") as stderr:
            self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                         pass_fds=(3, 4), preexec_fn=plumbing,
                                         stdout=subprocess.DEVNULL, stderr=stderr)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    def _stderr_tail(self) -> str:
        try:
            with open(os.path.join(self.profile, "stderr.log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-15:]).decode(errors="replace")
        except OSError:
            return ""

    # -- the protocol ----------------------------------------------------------------------------
    def send(self, method: str, params: dict | None = None, session: bool = True,
             timeout: float = REPLY_TIMEOUT) -> dict:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._read(deadline):
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise BrowserError(f"{method}: {reply['error']}")
                    return reply.get("result", {})

    def _read(self, deadline: float) -> list[dict]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError("the browser did not answer in time")
            readable, _, _ = select.select([self._from_browser], [], [], remaining)
            if readable:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError("the browser went away")
                self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        return [json.loads(m) for m in messages if m]

    # -- what tests use ----------------------------------------------------------------------------
    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 900, "deviceScaleFactor": 1,
                                                         "mobile": False})
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15, what: str | None = None) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout}s waiting for {what or expression}")
            time.sleep(0.1)

    def click(self, selector_js: str) -> None:
        """A real click (press and release of the left button) at the centre of the element."""
        box = self.evaluate(f"(() => {{ const e = {selector_js}; e.scrollIntoView({{block: 'center'}}); "
                            "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        if not box:
            raise BrowserError(f"nothing to click: {selector_js}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "clickCount": 0 if kind == "mouseMoved" else 1})

    def screenshot(self, path: str) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self) -> None:
        """Browser.close, then a kill if that goes unanswered."""
        try:
            self.send("Browser.close", session=False)
            self.proc.wait(10)
        except (BrowserError, OSError, subprocess.TimeoutExpired):
            self.kill()
        else:
            self._release()

    def kill(self) -> None:
        """Killed at once (a browser that does not answer), its pipes and profile gone."""
        self.proc.kill()
        self.proc.wait()
        self._release()

    def _release(self) -> None:
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)
