"""A real headless Chromium driven over the DevTools protocol: what the page tests and the screenshot command use.

Started with `--remote-debugging-port=0` and a fresh `--user-data-dir` (the port it picked is in that folder's
DevToolsActivePort file); spoken to over one websocket with aiohttp (already installed with Ray). A visit
records what a user's browser would show or do: console errors, uncaught exceptions, failed loads, and every
URL the page requested, so a test can say "no request left the folder".
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time

BINARIES = ("chromium", "chromium-browser", "google-chrome")


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """`with Chromium() as browser: visit = browser.open(url)`; one tab per `open`."""

    def __init__(self, binary: str | None = None, width: int = 1200, height: int = 900):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("chromium not found (Debian: apt-get install chromium)")
        self.width, self.height = width, height
        self.loop = asyncio.new_event_loop()

    def __enter__(self) -> "Chromium":
        self.profile = tempfile.mkdtemp(prefix="maskgan-chromium-")
        args = [self.binary, "--headless", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--allow-file-access-from-files", f"--window-size={self.width},{self.height}"]
        if os.geteuid() == 0:  # Chromium refuses to run its sandbox as root (containers, CI)
            args.append("--no-sandbox")
        self.proc = subprocess.Popen([*args, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 60
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise BrowserError(f"{self.binary} did not start its DevTools server")
            time.sleep(0.1)
        self.port = int(open(port_file).read().split()[0])
        import aiohttp

        self.http = self.loop.run_until_complete(self._session(aiohttp))
        return self

    async def _session(self, aiohttp):
        return aiohttp.ClientSession()

    def __exit__(self, *exc) -> None:
        if getattr(self, "http", None) is not None:
            self.loop.run_until_complete(self.http.close())
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.loop.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def open(self, url: str, timeout: float = 30) -> "Visit":
        """A new tab at `url`, returned once its load event fired."""
        return self.loop.run_until_complete(self._open(url, timeout))

    async def _open(self, url: str, timeout: float) -> "Visit":
        async with self.http.put(f"http://127.0.0.1:{self.port}/json/new?about:blank") as r:
            target = await r.json(content_type=None)
        ws = await self.http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        visit = Visit(self, ws)
        visit.reader = self.loop.create_task(visit._read())
        for domain in ("Runtime", "Log", "Network", "Page"):
            await visit._send(f"{domain}.enable")
        await visit._send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                          deviceScaleFactor=1, mobile=False)
        visit.loaded.clear()
        await visit._send("Page.navigate", url=url)
        await asyncio.wait_for(visit.loaded.wait(), timeout)
        await asyncio.sleep(0.2)  # let images decode and late console messages arrive
        return visit


class Visit:
    """One tab: what it logged and requested, plus `evaluate` and `screenshot`."""

    def __init__(self, browser: Chromium, ws):
        self.browser, self.ws = browser, ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.loaded = asyncio.Event()
        self.console_errors: list[str] = []  # console.error, uncaught exceptions, error log entries (CSP, 404)
        self.requests: list[str] = []  # every URL the page asked for
        self.failed: list[str] = []

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Page.loadEventFired":
                self.loaded.set()
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                self.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                    for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                self.console_errors.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                e = params["entry"]
                self.console_errors.append(f"{e.get('text')} ({e.get('url', '')})")
            elif method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                self.failed.append(f"{params.get('errorText')} {params.get('blockedReason') or ''}".strip())

    async def _send(self, method: str, **params) -> dict:
        msg_id = next(self.ids)
        fut = self.browser.loop.create_future()
        self.pending[msg_id] = fut
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 30)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        async def run():
            r = await self._send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
            if "exceptionDetails" in r:
                raise BrowserError(f"{expression[:80]}: {r['exceptionDetails'].get('text')}")
            return r["result"].get("value")
        return self.browser.loop.run_until_complete(run())

    def screenshot(self, max_height: int | None = None) -> bytes:
        """PNG of the whole page (or its top `max_height` CSS pixels)."""
        async def run():
            m = await self._send("Page.getLayoutMetrics")
            size = m.get("cssContentSize") or m["contentSize"]
            h = int(size["height"]) if max_height is None else min(int(size["height"]), max_height)
            shot = await self._send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                    clip={"x": 0, "y": 0, "width": self.browser.width, "height": h, "scale": 1})
            return base64.b64decode(shot["data"])
        return self.browser.loop.run_until_complete(run())

    def close(self) -> None:
        async def run():
            self.reader.cancel()
            await self.ws.close()
        self.browser.loop.run_until_complete(run())


def outside(requests: list[str], folder: str) -> list[str]:
    """The requested URLs that are not files inside `folder` (a local directory)."""
    from pathlib import Path

    base = Path(folder).resolve().as_uri().rstrip("/") + "/"
    return [u for u in requests if not u.startswith(base)]


BROKEN_IMAGES_JS = "[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
