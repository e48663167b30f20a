"""The review UI in headless Chromium (Debian's ``chromium``, driven by Playwright) against a
real sidecar process and broker: see a held message, release it, find it delivered on Kafka;
the genealogy graph draws coloured claims. Screenshots land in tests/artifacts/ and in the
test's tmp dir (the paths are printed)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ostracon.envelope import encode
from ostracon.routing import H_RELEASED, header
from ostracon.transport.embedded import EmbeddedBroker
from tests.system_packages import ensure_debian
from tests.unit.test_api import team

from .conftest import produce, read_all
from .test_api import TOKEN, AdminSidecar, held_items

pytestmark = pytest.mark.broker

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
COLORS = {"green": "rgb(56,161,105)", "yellow": "rgb(236,201,75)", "red": "rgb(229,62,62)"}


async def shoot(page: Any, tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
    print(f"screenshot: {path} (and {ARTIFACTS / path.name})")
    return path


async def test_release_from_the_ui_reaches_the_delivered_topic(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    chromium = ensure_debian("chromium", "chromium")
    playwright = pytest.importorskip("playwright.async_api")
    admin = AdminSidecar(broker, tmp_path)
    try:
        await admin.start()
        await produce(broker.bootstrap, "agents.inbound", [encode(e) for e in team()])
        held = {h["message_id"]: h for h in await held_items(admin, 2)}
        async with playwright.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1100})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{admin.url}/ui/")
                # the token is entered once; it is kept in sessionStorage
                await page.fill("#token", TOKEN)
                await page.fill("#user", "ui-tester")
                await page.click("#token-form button")
                row = page.locator(f"tr[data-decision='{held['m3']['decision_id']}']")
                await row.wait_for(timeout=15_000)
                assert "Rivalco raised $50M." in await row.inner_text()
                assert await page.evaluate("sessionStorage.getItem('ostracon-token')") == TOKEN

                # the graph: claims coloured by label, origins marked
                await page.wait_for_function(
                    "window.ostraconGraph && window.ostraconGraph.nodes('[type=\"claim\"]')"
                    ".length === 4",
                    timeout=15_000,
                )
                claims = await page.evaluate(
                    """() => window.ostraconGraph.nodes('[type="claim"]').map(n => ({
                        id: n.id(), label: n.data('label'), origin: n.data('origin'),
                        color: n.style('background-color').replace(/ /g, ''),
                        border: n.style('border-width')}))"""
                )
                by_id = {c["id"]: c for c in claims}
                assert {c["label"] for c in claims} == {"green", "yellow", "red"}
                for c in claims:
                    assert c["color"] == COLORS[c["label"]], c
                assert by_id["c:m1#0"]["origin"] and by_id["c:m1#0"]["border"] == "4px"
                # selecting a claim highlights its lineage back to its origin
                lineage = await page.evaluate(
                    """() => { const cy = window.ostraconGraph;
                        cy.getElementById('c:m4#0').emit('tap');
                        return cy.$('.lineage').nodes().map(n => n.id()).sort(); }"""
                )
                assert lineage == ["c:m1#0", "c:m4#0"]
                assert "origin" in await page.inner_text("#details")
                await shoot(page, tmp_path, "review-ui-before-release")

                # release with a reason
                await row.locator("input.reason").fill("checked with the CFO")
                await row.locator("button.release").click()
                await row.wait_for(state="detached", timeout=15_000)
                await page.locator("#audit tbody tr").first.wait_for(timeout=15_000)
                assert "human:ui-tester" in await page.inner_text("#audit")
                await shoot(page, tmp_path, "review-ui-after-release")
                assert errors == []
            finally:
                await browser.close()

        delivered = await read_all(broker.bootstrap, ["agents.delivered"], expect=3)
        released = [r for r in delivered if header(r.headers, H_RELEASED)]
        assert [header(r.headers, H_RELEASED) for r in released] == ["human:ui-tester"]
        assert msgspec.json.decode(released[0].value)["content"] == "Rivalco raised $50M."
    finally:
        admin.stop()
