"""report/index.html opened in a real browser: headless Chromium (Debian's `chromium`,
installed by the Makefile's test set-up where apt works), driven over the DevTools
protocol on 127.0.0.1. Every chart is drawn, nothing is logged as an error, nothing is
fetched but the file itself, and the figures drawn are summary.json's."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import aiohttp
import pytest

from pipelines.report import CHARTS
from tests.report_audit import report_audit  # noqa: F401 - the fixture

CHROMIUM = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (make system installs Debian's chromium where apt works; "
           "else: apt-get install chromium)",
)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")
TIMEOUT_S = 90

# Gathered in the page: per chart, what was drawn and the traces plotly was given.
PAGE_STATE = """
(() => {
  const charts = {};
  for (const id of %s) {
    const gd = document.getElementById("chart-" + id);
    if (!gd) { charts[id] = null; continue; }
    const svg = [...gd.querySelectorAll("svg.main-svg")];
    const box = svg.length ? svg[0].getBoundingClientRect() : {width: 0, height: 0};
    charts[id] = {
      drawn: !!gd._fullLayout,
      svg: svg.length, width: box.width, height: box.height,
      marks: [...gd.querySelectorAll(".points .point path, path.js-line")].filter(p => (p.getAttribute("d") || "").length > 4).length,
      notes: [...gd.querySelectorAll(".annotation-text")].map(a => a.textContent),
      canvas: gd.querySelectorAll("canvas").length,
      data: (gd.data || []).map(t => ({name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || [])})),
    };
  }
  const facts = [...document.querySelectorAll("#facts tr")].map(
    tr => [tr.querySelector("th").textContent, tr.querySelector("td").textContent]);
  return JSON.stringify({charts, facts});
})()
"""


class DevTools:
    """A minimal DevTools protocol client: calls by id, events kept in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self._ws = ws
        self._next = 0
        self._pending: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self._ws.send_str(json.dumps(message))
        reply = await asyncio.wait_for(future, TIMEOUT_S)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def wait_event(self, method: str) -> dict:
        for _ in range(TIMEOUT_S * 10):
            for event in self.events:
                if event["method"] == method:
                    return event
            await asyncio.sleep(0.1)
        raise TimeoutError(method)

    async def close(self) -> None:
        self._reader.cancel()


def _devtools_url(proc: subprocess.Popen) -> str:
    """The browser's DevTools websocket, from the line Chromium prints on start."""
    for line in proc.stderr:
        if "DevTools listening on " in line:
            return line.split("DevTools listening on ", 1)[1].strip()
    raise RuntimeError(f"chromium exited ({proc.wait()}) without a DevTools address")


async def _open(url: str, ws_url: str) -> tuple[dict, list[dict]]:
    ids = json.dumps([name for name, _ in CHARTS])
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        tools = DevTools(ws)
        try:
            target = await tools.call("Target.createTarget", url="about:blank")
            session = (await tools.call("Target.attachToTarget", targetId=target["targetId"], flatten=True))["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                await tools.call(f"{domain}.enable", session=session)
            await tools.call("Page.navigate", session=session, url=url)
            await tools.wait_event("Page.loadEventFired")
            for _ in range(TIMEOUT_S * 4):  # plotly draws after load; wait for every chart
                reply = await tools.call("Runtime.evaluate", session=session, expression=PAGE_STATE % ids,
                                         returnByValue=True)
                state = json.loads(reply["result"]["value"])
                if all(c and c["drawn"] and c["svg"] for c in state["charts"].values()):
                    break
                await asyncio.sleep(0.25)
            await asyncio.sleep(0.5)  # late errors or requests, if any, arrive now
            return state, list(tools.events)
        finally:
            await tools.close()


@pytest.fixture(scope="module")
def browsed(report_audit):
    page = Path(report_audit["output"], "report", "index.html").resolve()
    url = page.as_uri()
    profile = tempfile.mkdtemp(prefix="laion-audit-chromium-")
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
                             "--remote-debugging-port=0", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        state, events = asyncio.run(_open(url, _devtools_url(proc)))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
    summary = json.loads(Path(report_audit["output"], "report", "summary.json").read_text())
    return {"state": state, "events": events, "url": url, "summary": summary}


def test_every_chart_is_drawn(browsed):
    charts = browsed["state"]["charts"]
    assert set(charts) == {name for name, _ in CHARTS}
    for name, chart in charts.items():
        assert chart is not None and chart["drawn"], name
        assert chart["svg"] >= 1 and chart["width"] > 100 and chart["height"] > 100, (name, chart)
        # The audit has something for every chart: bars or a line, not an empty-state note.
        assert chart["marks"] > 0 and not chart["notes"] or name == "scores", (name, chart["marks"], chart["notes"])
    assert charts["scores"]["marks"] > 0


def test_no_console_error_and_no_request_but_the_file(browsed):
    events = browsed["events"]
    errors = [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"]
    errors += [e["params"] for e in events
               if e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert")]
    errors += [e["params"]["entry"] for e in events
               if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    assert errors == []
    requested = {e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"}
    assert requested == {browsed["url"]}


def _pairs(traces: list[dict], horizontal: bool = False) -> dict:
    """{(category, trace name): value} of stacked bar traces, zeros left out."""
    found = {}
    for trace in traces:
        keys, values = (trace["y"], trace["x"]) if horizontal else (trace["x"], trace["y"])
        found.update({(key, trace["name"]): value for key, value in zip(keys, values) if value})
    return found


def _nested(tally: dict) -> dict:
    return {(outer, inner): n for outer, inners in tally.items() for inner, n in inners.items() if n}


def test_the_figures_drawn_are_summary_json_numbers(browsed):
    charts, summary = browsed["state"]["charts"], browsed["summary"]
    report = summary["report"]
    data = {name: chart["data"] for name, chart in charts.items()}
    assert dict(zip(data["status"][0]["x"], data["status"][0]["y"])) == summary["status"]
    assert _pairs(data["failures"], horizontal=True) == _nested(report["failures_by_host"])
    assert _pairs(data["actions"]) == _nested(report["reasons_by_action"])
    assert _pairs(data["matches"]) == _nested(report["matches_by_list"])
    assert dict(zip(data["caption_flags"][0]["x"], data["caption_flags"][0]["y"])) == summary["caption_flags"]
    scored, labelled = data["labels"]
    assert dict(zip(scored["x"], scored["y"])) == report["scored"]
    assert {k: v for k, v in zip(labelled["x"], labelled["y"]) if v} == summary["labels"]
    assert {trace["name"]: trace["y"] for trace in data["scores"]} == report["score_histograms"]
    (line,) = data["throughput"]
    drawn = dict(zip(line["x"], line["y"]))  # per-second buckets: rows/s; seconds without a row drawn as 0
    assert {k: v for k, v in drawn.items() if v} == report["audited_per_second"]
    assert line["x"] == sorted(line["x"]) and len(line["x"]) == len(set(line["x"]))
    facts = dict(browsed["state"]["facts"])
    assert facts["rows in"] == str(summary["rows_in"]) and facts["rows audited"] == str(summary["rows_audited"])
    assert facts["all rows accounted"] == "yes"
    assert os.path.getsize(browsed["url"][len("file://"):]) < 5_500_000
