"""The status page in a real browser (headless Chromium over the DevTools protocol): log in
with the form, see every load balancer, frontend, backend and server, the stopped server
DOWN with its check's reason, counters moving under real traffic, and charts drawn.
With LBFAST_STATUS_SCREENSHOT=path the screenshot is also written there (the README's)."""
import asyncio
import json
import os
import shutil

import pytest
from PIL import Image, ImageStat

from tests.cdp import Browser
from tests.statusbed import TOKEN, StatusBed


ROWS = """JSON.stringify({
  lbs: [...document.querySelectorAll("section.lb")].map(s => s.dataset.lb),
  frontends: Object.fromEntries([...document.querySelectorAll("tr[data-frontend]")].map(r => [r.dataset.frontend,
    Object.fromEntries([...r.querySelectorAll("td")].map(c => [c.dataset.field, c.textContent]))])),
  backends: [...document.querySelectorAll("tr[data-backend]")].map(r => r.dataset.backend),
  servers: Object.fromEntries([...document.querySelectorAll("tr[data-server]")].map(r => [r.dataset.server,
    {state: r.dataset.state, colour: getComputedStyle(r).backgroundColor,
     cells: Object.fromEntries([...r.querySelectorAll("td")].map(c => [c.dataset.field, c.textContent]))}])),
  legend: [...document.querySelectorAll("#legend span")].map(s => s.className),
  refreshes: Number(document.body.dataset.refreshes || 0),
})"""


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    b = StatusBed(tmp_path_factory.mktemp("status-page"))
    yield b
    b.close()


async def rows(page) -> dict:
    return json.loads(await page.evaluate(ROWS))


async def after_refreshes(page, n: int) -> dict:
    start = (await rows(page))["refreshes"]
    await page.wait_for(f"Number(document.body.dataset.refreshes || 0) >= {start + n}", timeout=10,
                        what=f"{n} more refreshes")
    return await rows(page)


def chart_variance(png, box: dict) -> float:
    with Image.open(png) as img:
        crop = img.convert("L").crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]),
                                      int(box["y"] + box["height"])))
        return ImageStat.Stat(crop).var[0]


def test_status_page_in_chromium(bed, tmp_path):
    asyncio.run(look_at_the_page(bed, tmp_path))


async def look_at_the_page(bed, tmp_path):
    async with Browser() as browser:
        page = await browser.page()
        # record what the Content-Security-Policy blocks (scripts the DevTools protocol adds are exempt)
        await page.send("Page.addScriptToEvaluateOnNewDocument", source=(
            "window.blocked = []; document.addEventListener('securitypolicyviolation',"
            " e => blocked.push(e.violatedDirective));"))
        await page.goto(bed.base + "/status")
        # not logged in: the login form, which says nothing of the token
        assert await page.evaluate("document.querySelector('form[action=\"/status/login\"]') !== null")
        assert TOKEN not in await page.evaluate("document.documentElement.outerHTML")
        await page.evaluate(f"document.getElementById('token').value = {TOKEN!r}")
        await page.evaluate("document.getElementById('login').click()")
        await page.wait_for("location.pathname == '/status' && document.getElementById('lbs') !== null",
                            what="the status page after logging in")
        assert await page.evaluate("document.cookie") == ""                 # HttpOnly: not readable by scripts
        first = await after_refreshes(page, 1)

        # every object is there
        view = bed.view()
        [lb] = view["lbs"]
        assert first["lbs"] == ["shop"]
        assert set(first["frontends"]) == {"tcp-in", "http-in"}
        assert first["backends"] == ["db", "web"]
        keys = {s["key"] for b in lb["backends"] for s in b["servers"]}
        assert set(first["servers"]) == keys
        assert first["frontends"]["tcp-in"]["dataplane"] == "userspace"
        assert first["frontends"]["http-in"]["dataplane"] == "l7"
        assert {"state-up", "state-down", "state-drain", "state-backup", "state-maint"} <= set(first["legend"])

        # the stopped server is DOWN, says why, and is drawn in the DOWN colour
        down = first["servers"][bed.down_key]
        assert down["state"] == "down" and down["cells"]["state"] == "DOWN"
        assert "Connection refused" in down["cells"]["last_check"]
        assert "Connection refused" in down["cells"]["change_reason"]
        states = {s["state"] for s in first["servers"].values()}
        assert {"up", "down", "drain", "backup"} <= states
        up = next(s for s in first["servers"].values() if s["state"] == "up")
        assert down["colour"] != up["colour"]

        # counters move while real traffic runs
        later = await after_refreshes(page, 2)
        for name, counter in (("http-in", "requests"), ("tcp-in", "total")):
            assert int(later["frontends"][name][counter]) > int(first["frontends"][name][counter]), name
        assert float(later["frontends"]["http-in"]["req_rate"]) > 0
        assert int(later["frontends"]["http-in"]["r2xx"]) > 0

        # charts: drawn lines and health strips, visible in a screenshot
        await after_refreshes(page, 1)
        assert await page.evaluate("document.querySelectorAll('#rate-charts polyline.rate').length") >= 2
        assert await page.evaluate("document.querySelectorAll('#health-charts rect.state-down').length") >= 1
        boxes = await page.evaluate("""JSON.stringify(['rate-charts', 'health-charts'].map(id => {
            const r = document.getElementById(id).getBoundingClientRect();
            return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}; }))""")
        png = await page.screenshot(tmp_path / "status.png")
        for box in json.loads(boxes):
            assert box["width"] > 100 and box["height"] > 30, box
            assert chart_variance(png, box) > 100, box          # not a blank area
        # the page itself needed nothing the policy forbids, and the policy forbids inline script
        assert await page.evaluate("blocked") == []
        await page.evaluate("const s = document.createElement('script'); s.textContent = 'window.inlineRan = 1';"
                            " document.body.append(s)")
        await page.wait_for("blocked.length > 0", what="the CSP to block an inline script")
        assert await page.evaluate("window.inlineRan === undefined && blocked[0].startsWith('script-src')")
        if os.environ.get("LBFAST_STATUS_SCREENSHOT"):
            shutil.copy(png, os.environ["LBFAST_STATUS_SCREENSHOT"])
