"""The page at / of the sink's API, in a real browser (Debian's headless Chromium,
driven by Selenium through Debian's chromedriver; nothing downloaded): after spans on
known routes it draws the route matrix (local and remote cells marked), loss and
duplicates per generator, the check's verdict with its failures, the attribution,
and it follows new spans by itself.

TRACE_SCREENSHOT=PATH also saves the screenshot there (docs/images/route-matrix.png
is made this way)."""

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[2]
TRACE_GEN = Path(os.environ.get("TRACE_GEN_BIN", REPO / "target/release/trace-gen"))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30  # seconds: an upper bound for what the page shows within about 2


def trace_gen(sink, node, agent, count):
    """trace-gen sends `count` spans from `node`; `agent` stands in for the agent's stamp."""
    args = [str(TRACE_GEN), "--node-name", node, "--endpoint", f"http://{sink['grpc']}",
            "--count", str(count), "--rate", "0", "--stats-listen", "off", "--report-interval", "0s"]
    if agent:
        args += ["--resource-attribute", f"agent.node.name={agent}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, "RUST_LOG": "warn"})
    assert r.returncode == 0, r.stderr


def gappy_generator(sink, node, seqs):
    """A generator (the OpenTelemetry SDK) whose sequence numbers have gaps and repeats."""
    gen_id = str(uuid.uuid4())
    provider = TracerProvider(resource=Resource.create(
        {"service.name": "gappy", "k8s.node.name": node, "agent.node.name": node, "tracegen.generator.id": gen_id}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://{sink['http']}/v1/traces")))
    tracer = provider.get_tracer("gappy")
    for seq in seqs:
        with tracer.start_as_current_span("op") as span:
            span.set_attribute("tracegen.seq", seq)
    provider.shutdown()
    return gen_id


def get_json(sink, path):
    try:
        with urllib.request.urlopen(f"http://{sink['api']}{path}", timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # /check: 412 with its report
        return json.load(e)


@pytest.fixture()
def browser(tmp_path):
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        assert Path(path).exists(), f"{path} missing: apt-get install {package} (./run-tests.sh does as root)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def matrix_cell(driver, generator, agent):
    """The cell of the matrix found the way a screen reader finds it: by the row's and
    the column's header text."""
    table = driver.find_element(By.ID, "matrix")
    columns = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    for row in table.find_elements(By.CSS_SELECTOR, "tbody tr"):
        if row.find_element(By.CSS_SELECTOR, "th[scope=row]").text == generator:
            return row.find_elements(By.CSS_SELECTOR, "th, td")[columns.index(agent)]
    raise AssertionError(f"no row {generator!r} in the matrix")


def cell_reads(driver, generator, agent, text):
    try:
        return matrix_cell(driver, generator, agent).text.split("\n")[0] == text
    except Exception:  # not drawn yet, or redrawn while being read
        return False


def test_page_draws_the_routes(sink, browser, tmp_path):
    """Routes, verdict, generators and attribution as the JSON says; the page follows
    new spans and the expect=local checkbox by itself."""
    assert TRACE_GEN.exists(), f"{TRACE_GEN} missing: cargo build --release (./run-tests.sh does)"
    trace_gen(sink, "node-1", "node-1", 40)
    trace_gen(sink, "node-2", "node-2", 30)
    trace_gen(sink, "node-2", "node-1", 20)
    trace_gen(sink, "node-3", None, 10)
    gappy = gappy_generator(sink, "node-3", [1, 2, 3, 4, 8, 9, 9, 10])  # 5, 6, 7 missing; 9 twice
    stats = get_json(sink, "/stats")
    assert stats["spans_total"] == 108

    browser.get(f"http://{sink['api']}/")
    WebDriverWait(browser, WAIT).until(lambda d: cell_reads(d, "node-1", "node-1", "40"))
    table = browser.find_element(By.ID, "matrix")
    assert table.tag_name == "table"
    assert [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")][1:] == ["node-1", "node-2", "node-3", "(unknown)"]
    assert [th.text for th in table.find_elements(By.CSS_SELECTOR, "tbody th[scope=row]")] == ["node-1", "node-2", "node-3"]
    for generator, agent, count, kind in [
        ("node-1", "node-1", "40", "local"),
        ("node-2", "node-2", "30", "local"),
        ("node-2", "node-1", "20", "remote"),
        ("node-3", "(unknown)", "10", "unattributed"),
        ("node-3", "node-3", "8", "local"),
    ]:
        cell = matrix_cell(browser, generator, agent)
        assert cell.tag_name == "td"
        assert cell.text.split("\n") == [count, kind], (generator, agent, cell.text)
        assert cell.get_attribute("data-kind") == kind
        assert kind in cell.get_attribute("class").split()
    # A route that carried nothing is an empty cell, marked as nothing.
    empty = matrix_cell(browser, "node-1", "node-2")
    assert (empty.text, empty.get_attribute("data-kind")) == ("", None)
    # Local and remote look different (not only in words).
    local_bg = matrix_cell(browser, "node-1", "node-1").value_of_css_property("background-color")
    remote_bg = matrix_cell(browser, "node-2", "node-1").value_of_css_property("background-color")
    assert local_bg != remote_bg

    assert browser.find_element(By.ID, "verdict").text == "PASS"
    totals = browser.find_element(By.ID, "totals").text
    assert totals.startswith("108 spans since ") and "78 local, 20 remote, 10 unattributed" in totals, totals

    rows = {r.find_element(By.TAG_NAME, "code").text: [td.text for td in r.find_elements(By.TAG_NAME, "td")]
            for r in browser.find_elements(By.CSS_SELECTOR, "#generators tbody tr")}
    assert len(rows) == 5
    # id, node, spans, missing, duplicates, untracked, sequence, connections, last seen
    assert rows[gappy][1:7] == ["node-3", "8", "3", "1", "0", "1\u202610"], rows[gappy]
    bad = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#generators td.bad")]
    assert bad == ["3", "1"], bad

    attribution = browser.find_element(By.ID, "attribution").text
    by_source = sum(r["spans_by_attribution"].get("attribute", 0) for r in stats["routes"])
    assert by_source == 98
    assert "attribute: 98 spans, the agent stamped its node on the spans" in attribution, attribution
    assert "--k8s-attribution is off" in attribution, attribution

    # The checkbox asks /check?expect=local: FAIL, with the failure in words.
    browser.find_element(By.ID, "expect-local").click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "verdict").text == "FAIL")
    assert "fail" in browser.find_element(By.ID, "verdict").get_attribute("class").split()
    failures = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#failures li")]
    expected = get_json(sink, "/check?expect=local")["failures"]
    assert failures == [f["message"] for f in expected] and failures, failures
    assert any("20 remote" in f for f in failures), failures
    assert browser.current_url.endswith("#expect=local")

    # New spans show up without a reload.
    trace_gen(sink, "node-1", "node-1", 5)
    WebDriverWait(browser, WAIT).until(lambda d: cell_reads(d, "node-1", "node-1", "45"))

    # A screenshot of the whole page, for the docs.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
    shot = tmp_path / "route-matrix.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("TRACE_SCREENSHOT"):
        shutil.copy(shot, os.environ["TRACE_SCREENSHOT"])
