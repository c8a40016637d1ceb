"""The dashboard on a live `radixgen serve --api-key`, in a real browser (Chromium + Selenium).

One server for the module (float32, a small KV pool, an API key, no `--dashboard-show-text`).
The browser test opens /dashboard, gives it the key, runs a shared-prefix workload (one long
prefix, four questions) and waits for the page to show it: one shared node whose four children
are the questions, a hit rate above zero, KV bars that moved. A screenshot goes to
$RADIXGEN_TEST_ARTIFACTS (default: test-artifacts/) as dashboard.png.

Chromium and chromedriver come from Debian's packages (scripts/install_browser.sh, which
scripts/test.sh runs); without them the browser test skips, except under CI, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import httpx
import pytest

from radixgen.launcher import running_server
from radixgen.server.app import create_app
from radixgen.server.context import EngineHolder, ServerSettings
from radixgen.server.dashboard.routes import SHELL_FILES

KEY = "dash-k3y"
AUTH = {"Authorization": f"Bearer {KEY}"}
SECRET = "Marzipan Lighthouse Quorum"  # in every prompt; must never leave the server
PREFIX = (
    f"Reference notes, {SECRET} edition. A radix tree stores strings by their shared "
    "prefixes: each edge holds a run of symbols, and a path from the root spells a key. "
) * 4
QUESTIONS = ["Who uses it?", "Why is it fast?", "When does it split?", "Where is it kept?"]
ARTIFACTS = Path(os.environ.get("RADIXGEN_TEST_ARTIFACTS", "test-artifacts"))
SERVER_ARGS = [
    "--dtype",
    "float32",
    "--kv-cache-tokens",
    "4096",
    "--log-level",
    "warning",
    "--api-key",
    KEY,
]


@pytest.fixture(scope="module")
def keyed_url():
    with running_server(SERVER_ARGS) as server:
        yield server.url


@pytest.fixture(scope="module")
def cached_workload(keyed_url) -> int:
    """The workload, run once for the tests that only read what it leaves in the cache."""
    return _run_workload(keyed_url)


def _generate(url: str, text: str) -> dict:
    body = {"text": text, "sampling_params": {"max_new_tokens": 6, "temperature": 0}}
    resp = httpx.post(f"{url}/generate", json=body, headers=AUTH, timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _run_workload(url: str) -> int:
    """On an empty cache: one request alone (it caches the prefix), then the other questions at
    once. Returns the tokens the later ones found cached: the shared prefix, where the tree
    branches."""
    assert httpx.post(f"{url}/flush_cache", headers=AUTH, timeout=30).status_code == 200
    first = _generate(url, PREFIX + QUESTIONS[0])
    assert first["meta_info"]["cached_tokens"] == 0
    with ThreadPoolExecutor(len(QUESTIONS) - 1) as pool:
        rest = list(pool.map(lambda q: _generate(url, PREFIX + q), QUESTIONS[1:]))
    cached = {r["meta_info"]["cached_tokens"] for r in rest}
    assert len(cached) == 1 and cached.pop() > 50, [r["meta_info"] for r in rest]
    return rest[0]["meta_info"]["cached_tokens"]


def _chromium():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        message = "chromium / chromedriver missing: run scripts/install_browser.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download a browser
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1500")
    return webdriver.Chrome(service=Service(driver), options=options)


# Does the page show a node at `prefix` tokens with exactly `count` children, all of which it
# draws as that node's children? (Run in the page; returns the node's id or null.)
_SHARED_NODE_JS = """
const [prefix, count] = arguments;
for (const g of document.querySelectorAll('#tree g.node')) {
  if (g.dataset.prefixTokens !== String(prefix) || g.dataset.children !== String(count)) continue;
  const kids = document.querySelectorAll(`#tree g.node[data-parent="${g.dataset.id}"]`);
  if (kids.length === count) return g.dataset.id;
}
return null;
"""


def _number(driver, element_id: str, attribute: str) -> float:
    return float(driver.find_element("id", element_id).get_attribute(attribute))


def test_dashboard_shows_the_shared_prefix_hit_rate_and_kv_in_a_browser(keyed_url):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chromium()
    try:
        wait = WebDriverWait(driver, 30, poll_frequency=0.2)
        driver.get(f"{keyed_url}/dashboard")
        form = wait.until(lambda d: d.find_element("id", "key-form"))
        wait.until(lambda d: form.is_displayed())  # the first poll got 401: the page asks
        driver.find_element("id", "api-key").send_keys(KEY)
        driver.find_element("id", "key-submit").click()
        wait.until(lambda d: "live" in d.find_element("id", "status").get_attribute("class"))
        assert not form.is_displayed()
        assert _number(driver, "hit-rate", "data-value") == 0.0
        evictable_before = _number(driver, "kv-evictable", "data-tokens")
        free_before = _number(driver, "kv-free", "data-tokens")

        shared = _run_workload(keyed_url)

        node_id = wait.until(lambda d: d.execute_script(_SHARED_NODE_JS, shared, len(QUESTIONS)))
        wait.until(lambda d: _number(d, "hit-rate", "data-value") > 0)
        wait.until(lambda d: _number(d, "kv-evictable", "data-tokens") > evictable_before)
        assert _number(driver, "kv-free", "data-tokens") < free_before
        rows = "#recent tbody tr"  # one per finished request
        wait.until(lambda d: len(d.find_elements("css selector", rows)) == len(QUESTIONS))
        assert "lpm" in driver.find_element("id", "settings").text

        # Hovering the shared node shows its token count and hits (and no text).
        node = driver.find_element("css selector", f'#tree g.node[data-id="{node_id}"] rect')
        ActionChains(driver).move_to_element(node).perform()
        tooltip = wait.until(lambda d: d.find_element("id", "tooltip").text or None)
        assert f"{shared} tokens" in tooltip and "hits: 3" in tooltip, tooltip
        assert SECRET not in tooltip and "text:" not in tooltip

        header = driver.find_element("tag name", "header")
        ActionChains(driver).move_to_element(header).perform()  # the tooltip hides
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        page = driver.page_source + driver.execute_script("return document.body.innerText")
        assert SECRET not in page and "Marzipan" not in page
    finally:
        driver.quit()


def test_data_routes_refuse_requests_without_the_key(keyed_url):
    for path in ("/cache_tree", "/cache_tree?depth=2", "/dashboard/state"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            resp = httpx.get(f"{keyed_url}{path}", headers=headers, timeout=30)
            assert resp.status_code == 401, (path, headers)
            assert resp.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{keyed_url}{path}", headers=AUTH, timeout=30).status_code == 200
    # The shell loads without a key (a browser cannot send one) and carries no server data.
    static = resources.files("radixgen.server.dashboard").joinpath("static")
    for path, (name, _) in SHELL_FILES.items():
        resp = httpx.get(f"{keyed_url}{path}", timeout=30)
        assert resp.status_code == 200
        assert resp.content == static.joinpath(name).read_bytes()  # the package's file as is
        assert "connect-src 'self'" in resp.headers["content-security-policy"]
        assert "access-control-allow-origin" not in resp.headers
    resp = httpx.get(
        f"{keyed_url}/cache_tree", headers={**AUTH, "Origin": "https://elsewhere.example"}
    )
    assert "access-control-allow-origin" not in resp.headers  # CORS off by default


def test_bad_tree_limits_are_400s_naming_the_parameter(keyed_url):
    for query, param in (
        ("depth=-1", "depth"),
        ("max_nodes=x", "max_nodes"),
        ("min_tokens=1.5", "min_tokens"),
        ("max_nodes=5001", "max_nodes"),
    ):
        resp = httpx.get(f"{keyed_url}/cache_tree?{query}", headers=AUTH, timeout=30)
        assert resp.status_code == 400, query
        assert resp.json()["error"]["param"] == param
    ok = httpx.get(f"{keyed_url}/cache_tree?depth=0&max_nodes=0", headers=AUTH, timeout=30)
    assert ok.status_code == 200 and ok.json()["root"]["children"] == []


def test_no_prompt_text_leaves_the_server_without_the_text_option(keyed_url, cached_workload):
    docs = [
        httpx.get(f"{keyed_url}{path}", headers=AUTH, timeout=30)
        for path in ("/cache_tree", "/cache_tree?min_tokens=0&max_nodes=5000", "/dashboard/state")
    ]
    for resp in docs:
        assert resp.status_code == 200
        assert SECRET not in resp.text and "Marzipan" not in resp.text
        assert "radix tree stores" not in resp.text and "Why is it fast" not in resp.text
    tree = docs[1].json()
    assert tree["text"] is False and tree["nodes"] >= len(QUESTIONS) + 1

    def walk(node):
        assert "text" not in node
        for child in node["children"]:
            walk(child)

    walk(tree["root"])


def test_cache_tree_command_writes_an_svg(keyed_url, cached_workload, tmp_path):
    out = tmp_path / "tree.svg"
    done = subprocess.run(
        [sys.executable, "-m", "radixgen.cli", "cache-tree", "--url", keyed_url, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RADIXGEN_API_KEY": KEY},
    )
    assert done.returncode == 0, done.stderr
    svg = ET.parse(out).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    shown = int(done.stderr.split(": ", 1)[1].split(" of ")[0])
    rects = svg.findall(".//{http://www.w3.org/2000/svg}rect")
    assert shown >= len(QUESTIONS) + 1 and len(rects) >= shown + 1  # + the background
    assert SECRET not in out.read_text()
    refused = subprocess.run(
        [sys.executable, "-m", "radixgen.cli", "cache-tree", "--url", keyed_url, "--out", "-"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "RADIXGEN_API_KEY"},
    )
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr


class _Loaded(EngineHolder):
    """The session's engine, already loaded (tests/conftest.py), behind a real app."""

    def __init__(self, engine):
        super().__init__(engine.config)
        self.engine = engine

    def start(self) -> None:
        pass

    def shutdown(self) -> None:  # the session fixture shuts the engine down
        pass


def test_text_snippets_appear_only_with_the_text_option(engine):
    """The positive control of the privacy tests: the same app shows text when told to."""
    secret = "Quokka Saxophone Umbrella"
    prompt = f"Inventory of the {secret} archive, shelf by shelf, for the dashboard test."

    async def tree_text(show_text: bool) -> str:
        settings = ServerSettings(engine=engine.config, dashboard_show_text=show_text)
        app = create_app(settings, _Loaded(engine))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            body = {"text": prompt, "sampling_params": {"max_new_tokens": 2}}
            assert (await c.post("/generate", json=body, timeout=60)).status_code == 200
            resp = await c.get("/cache_tree", params={"max_nodes": 5000, "min_tokens": 0})
            assert resp.status_code == 200 and resp.json()["text"] is show_text
            return resp.text

    assert secret not in asyncio.run(tree_text(False))
    assert secret in asyncio.run(tree_text(True))
