"""Headless Chromium driven over the Chrome DevTools Protocol (one websocket, aiohttp's
client): open a page, evaluate JavaScript in it, take screenshots. Tests use it to see
what a person would see."""
import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import aiohttp

from control.testbed import stop_processes

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--remote-debugging-port=0"]


class CdpError(Exception):
    pass


class Browser:
    """`async with Browser() as b: page = await b.page()` — a fresh profile each time."""

    def __init__(self, width: int = 1400, height: int = 1000):
        self.size = (width, height)
        self.profile = tempfile.TemporaryDirectory(prefix="lbfast-chromium-", ignore_cleanup_errors=True)
        self.proc: subprocess.Popen | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws = None
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[asyncio.Queue] = []
        self.reader: asyncio.Task | None = None

    async def __aenter__(self) -> "Browser":
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            raise RuntimeError("chromium is not installed (Debian package chromium; .ci/setup-host)")
        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self.profile.name}", f"--window-size={self.size[0]},{self.size[1]}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)   # its own group: the zygote and renderers go with it
        port_file = Path(self.profile.name) / "DevToolsActivePort"
        for _ in range(200):
            if port_file.exists() and len(port_file.read_text().split()) == 2:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().split()
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=64 * 1024 * 1024)
        self.reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        if self.proc is not None:
            stop_processes([self.proc], grace=5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)   # helpers still writing into the profile
        self.profile.cleanup()

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                future = self.pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(CdpError(data["error"].get("message", str(data["error"]))))
                    else:
                        future.set_result(data.get("result", {}))
            else:
                for q in self.events:
                    q.put_nowait(data)
                if data.get("method") in ("Fetch.requestPaused", "Fetch.authRequired"):
                    asyncio.ensure_future(self._answer_auth(data))

    async def _answer_auth(self, event: dict) -> None:
        """What a person does at the browser's HTTP authentication dialog: cancel it (and
        use the page's login form instead); every other request goes on unchanged."""
        params, session = event["params"], event.get("sessionId")
        if event["method"] == "Fetch.requestPaused":
            await self.send("Fetch.continueRequest", session, requestId=params["requestId"])
        else:
            await self.send("Fetch.continueWithAuth", session, requestId=params["requestId"],
                            authChallengeResponse={"response": "CancelAuth"})

    async def send(self, method: str, session: str | None = None, timeout: float = 15.0, **params) -> dict:
        msg_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = future
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params,
                                           **({"sessionId": session} if session else {})}))
        return await asyncio.wait_for(future, timeout)

    async def page(self) -> "Page":
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        page = Page(self, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Fetch.enable", handleAuthRequests=True)
        await page.send("Emulation.setDeviceMetricsOverride", width=self.size[0], height=self.size[1],
                        deviceScaleFactor=1, mobile=False)
        return page


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser = browser
        self.session = session
        self.console: list[str] = []

    async def send(self, method: str, **params) -> dict:
        return await self.browser.send(method, self.session, **params)

    async def _until_event(self, name: str, action, timeout: float = 15.0) -> dict:
        q: asyncio.Queue = asyncio.Queue()
        self.browser.events.append(q)
        try:
            await action()
            async with asyncio.timeout(timeout):
                while True:
                    ev = await q.get()
                    if ev.get("sessionId") == self.session and ev.get("method") == name:
                        return ev.get("params", {})
        finally:
            self.browser.events.remove(q)

    async def goto(self, url: str) -> None:
        await self._until_event("Page.loadEventFired", lambda: self.send("Page.navigate", url=url))

    async def evaluate(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CdpError(result["exceptionDetails"].get("text", "") + " "
                           + str(result["exceptionDetails"].get("exception", {}).get("description", "")))
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0, what: str = ""):
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"timed out waiting in the page for {what or expression}")
            await asyncio.sleep(0.1)

    async def screenshot(self, path: os.PathLike) -> Path:
        """The whole page, however long, at the browser's width."""
        size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": self.browser.size[0], "height": size["height"], "scale": 1}
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
        Path(path).write_bytes(base64.b64decode(shot["data"]))
        return Path(path)
