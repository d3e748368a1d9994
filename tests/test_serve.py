"""serve: `capsearch serve` on a copy of the demo run: the JSON API, bad input, load, and the page in Chromium."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import CAPSEARCH, capsearch, capsearch_here, references

PROJECT = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT / "build" / "test-artifacts"


@pytest.fixture(scope="module")
def workspace(demo_run, tmp_path_factory):
    """A private copy of the demo run: the server announces itself in its data/index/server.json."""
    copy = tmp_path_factory.mktemp("serve") / "ws"
    shutil.copytree(demo_run, copy, symlinks=True)
    return copy


@pytest.fixture(scope="module")
def server(workspace):
    """``capsearch serve --port 0`` running in the workspace; its URL."""
    log = (workspace / "serve.log").open("w")
    process = subprocess.Popen(
        [CAPSEARCH, "serve", "--port", "0"], cwd=workspace, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    announce = workspace / "data" / "index" / "server.json"
    deadline = time.monotonic() + 120
    url = None
    while time.monotonic() < deadline and process.poll() is None:
        if announce.exists():
            url = json.loads(announce.read_text())["url"]
            try:
                get(f"{url}/api/health", timeout=2)
                break
            except OSError:
                pass
        time.sleep(0.2)
    if url is None or process.poll() is not None:
        process.kill()
        pytest.fail(f"capsearch serve did not start: {(workspace / 'serve.log').read_text()}")
    yield url
    process.send_signal(signal.SIGTERM)  # how systemd, Docker and Kubernetes stop it: a clean exit, as on SIGINT
    assert process.wait(timeout=30) == 0
    log.close()
    assert not announce.exists()  # it says where it listens only while it does


def get(url: str, timeout: float = 30) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def api_search(url: str, query: str, k: int = 10, method: str = "image", **extra) -> dict:
    return get(f"{url}/api/search?{urllib.parse.urlencode({'q': query, 'k': k, 'method': method, **extra})}")


def raw_get(url: str, path: str) -> tuple[int, str]:
    """GET ``path`` exactly as written (no client-side normalisation of ``../``)."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("GET", path, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    return response.status, response.read().decode("utf-8", "replace")


def test_health_and_a_search_that_finds_red_circles(server, workspace):
    health = get(f"{server}/api/health")
    assert health["status"] == "ok" and health["images"] == 60 and health["ann"] == "exact"
    answer = api_search(server, "a red circle", k=5)
    # an exact index (the toy gallery is small) ranks every image exactly, as /api/health says
    assert [hit["rank"] for hit in answer["hits"]] == [1, 2, 3, 4, 5] and answer["exact"] is True
    refs = references(workspace)
    for hit in answer["hits"][:3]:
        assert any("red" in caption for caption in refs[hit["image_id"]]), hit
    info = get(f"{server}/api/info/{answer['hits'][0]['image_id']}")
    assert [c.lower() for c in info["references"]] == refs[info["image_id"]]
    assert info["caption"] == answer["hits"][0]["caption"]
    with urllib.request.urlopen(f"{server}{answer['hits'][0]['image_url']}") as response:
        assert response.headers["content-type"] == "image/jpeg" and response.read(3) == b"\xff\xd8\xff"
    with urllib.request.urlopen(f"{server}{answer['hits'][0]['thumb_url']}") as response:
        assert response.read(3) == b"\xff\xd8\xff"


@pytest.mark.parametrize("method", ["image", "caption", "fusion"])
def test_the_server_answers_as_capsearch_search_does_and_exact_agrees(server, workspace, method):
    local = json.loads(
        capsearch_here(
            "search", "a blue square", "-k", "5", "--method", method, "--json", "--no-server", cwd=workspace
        ).stdout
    )[0]["hits"]
    served = api_search(server, "a blue square", k=5, method=method)["hits"]
    exact = api_search(server, "a blue square", k=5, method=method, exact=1)
    assert [h["image_id"] for h in served] == [h["image_id"] for h in local] == [h["image_id"] for h in exact["hits"]]
    assert [h["score"] for h in served] == pytest.approx([h["score"] for h in local], abs=1e-5)
    assert exact["exact"] is True


def test_capsearch_search_uses_the_running_server_and_says_so(server, workspace):
    result = capsearch("search", "a green triangle", "-k", "3", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert f"answered by the capsearch server at {server}" in result.stderr
    local = capsearch_here("search", "a green triangle", "-k", "3", "--no-server", cwd=workspace)
    assert "exact index, 200 candidates re-ranked exactly" in local.stderr
    assert result.stdout == local.stdout  # the same table either way
    errors = capsearch("search", "x", "-k", "1000", cwd=workspace)  # the server's 400, as one line
    assert errors.returncode == 2 and "answered 400: k must be a whole number from 1 to 100" in errors.stderr


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/search", 400, "empty query"),
        ("/api/search?q=", 400, "empty query"),
        ("/api/search?q=%20%20", 400, "empty query"),
        ("/api/search?q=%E2%80%8B", 400, "empty query"),  # a zero-width space
        ("/api/search?q=%EF%BB%BF", 400, "empty query"),  # a BOM
        ("/api/search?q=%00", 400, "empty query"),
        ("/api/search?q=%E2%80%8B%20%00%09", 400, "empty query"),
        ("/api/search?q=dog&k=0", 400, "k must be a whole number from 1 to 100"),
        ("/api/search?q=dog&k=-3", 400, "k must be a whole number from 1 to 100"),
        ("/api/search?q=dog&k=ten", 400, "k must be a whole number from 1 to 100"),
        ("/api/search?q=dog&k=1000000000", 400, "k must be a whole number from 1 to 100"),
        ("/api/search?q=dog&k=%C2%B2", 400, "k must be a whole number from 1 to 100, got '²'"),  # int() refuses
        ("/api/search?q=dog&k=%D9%A5", 400, "k must be a whole number from 1 to 100, got '٥'"),  # int() takes: 5
        ("/api/search?q=dog&k=" + "9" * 4301, 400, "k must be a whole number from 1 to 100"),  # int() refuses
        ("/api/search?q=" + "a" * 10_000, 400, "query too long: 10000 characters, at most 500"),
        ("/api/search?q=%FF%FEdog", 400, "not valid UTF-8"),
        ("/api/search?q=dog&method=clip", 400, "unknown method 'clip'"),
        ("/api/search?q=dog&alpha=2", 400, "alpha must be a number within 0..1"),
        ("/api/images/no-such-image.jpg", 404, "no image 'no-such-image.jpg' in this gallery"),
        ("/api/info/no-such-image.jpg", 404, "no image"),
        ("/api/images/../../params.yaml", 404, "no image"),
        ("/api/images/..%2F..%2Fparams.yaml", 404, "no image '../../params.yaml'"),
        ("/api/images//etc/passwd", 404, "no image '/etc/passwd'"),
        ("/api/images/%2Fetc%2Fpasswd", 404, "no image '/etc/passwd'"),
        ("/no/such/page", 404, "no such page"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_never_a_file_outside_the_gallery(server, path, status, message):
    code, body = raw_get(server, path)
    assert code == status, body
    error = json.loads(body)["error"]
    assert message in error and "Traceback" not in body and "root:" not in body


def test_other_methods_get_a_json_405(server):
    host, port = urllib.parse.urlsplit(server).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/api/search?q=dog", body=b"{}")
    response = connection.getresponse()
    assert response.status == 405 and json.loads(response.read()) == {"error": "only GET is answered here"}


def test_weak_matches_are_marked(server):
    good = api_search(server, "a red circle", k=3)
    assert not good["weak"] and not any(hit["weak"] for hit in good["hits"])
    health = get(f"{server}/api/health")
    assert all(hit["score"] > health["weak_below"] for hit in good["hits"])
    for method in ("image", "caption", "fusion"):
        answer = api_search(server, "a dog jumping into a pool", k=10, method=method)
        assert answer["weak"] == all(hit["weak"] for hit in answer["hits"])


def test_a_second_server_for_the_same_index_is_refused_and_the_first_keeps_its_announcement(server, workspace):
    announce = workspace / "data" / "index" / "server.json"
    before = announce.read_text()
    second = capsearch("serve", "--port", "0", cwd=workspace, timeout=60)
    assert second.returncode == 2, second.stderr
    assert (
        second.stderr.strip() == f"capsearch serve: a capsearch server for this index already runs at {server}; "
        "stop it first"
    )
    assert announce.read_text() == before and get(f"{server}/api/health")["status"] == "ok"


def test_fifty_concurrent_clients_of_twenty_queries_each(server):
    queries = ["a red circle", "a blue square", "a green triangle", "a yellow circle", "a purple square"]

    def client(number: int) -> list[float]:
        took = []
        for i in range(20):
            started = time.perf_counter()
            answer = api_search(server, queries[(number + i) % len(queries)], k=5)
            took.append(time.perf_counter() - started)
            assert len(answer["hits"]) == 5
        return took

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        latencies = sorted(t for client_times in pool.map(client, range(50)) for t in client_times)
    wall = time.monotonic() - started
    assert len(latencies) == 1000 and wall < 240
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * len(latencies))]
    print(f"\n50 clients x 20 queries over loopback: p50 {1000 * p50:.0f} ms, p95 {1000 * p95:.0f} ms, {wall:.1f} s")


def chromium_driver():
    """Headless Chromium from Debian's packages, driven by Selenium with the packaged chromedriver."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing: .ci/run installs them (apt-get)")
        pytest.skip("chromium/chromium-driver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def test_the_page_in_a_real_browser(server, workspace):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium_driver()
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(server)
        wait.until(lambda b: "images" in b.find_element(By.ID, "status").text)

        def shown(method: str) -> list[str]:
            wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-last-method") == method)
            return [tile.get_attribute("data-image-id") for tile in browser.find_elements(By.CSS_SELECTOR, ".hit")]

        box = browser.find_element(By.ID, "query")
        box.send_keys("a red circle", Keys.ENTER)
        tiles = shown("image")
        assert tiles == [hit["image_id"] for hit in api_search(server, "a red circle", k=24)["hits"]]
        refs = references(workspace)
        assert all(any("red" in c for c in refs[image_id]) for image_id in tiles[:3])
        wait.until(
            lambda b: all(
                img.get_property("naturalWidth") > 0 for img in b.find_elements(By.CSS_SELECTOR, ".hit img")[:6]
            )
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "serve_page.png"))

        browser.find_elements(By.CSS_SELECTOR, ".hit")[0].click()
        wait.until(lambda b: b.find_element(By.ID, "viewer").get_attribute("open") is not None)
        listed = [li.text.lower() for li in browser.find_elements(By.CSS_SELECTOR, "#viewer-references li")]
        assert listed == refs[tiles[0]]
        browser.find_element(By.ID, "viewer-close").click()

        browser.find_element(By.CSS_SELECTOR, 'input[name="method"][value="caption"]').click()
        assert shown("caption") == [h["image_id"] for h in api_search(server, "a red circle", 24, "caption")["hits"]]

        box.clear()
        box.send_keys(Keys.ENTER)
        wait.until(lambda b: b.find_element(By.ID, "message").text == "Type some words to search for.")
        assert browser.find_element(By.ID, "message").get_attribute("class") == "error"
        assert browser.find_elements(By.CSS_SELECTOR, ".hit") == []
    finally:
        browser.quit()


# ---- the service without a model: a server in this process over a small index ----------------------------------


@pytest.fixture
def odd_names_server(tmp_path):
    """A server over three images whose names need percent-encoding; every query embeds to the first image."""
    import threading

    import numpy as np
    from PIL import Image

    from capsearch.data.images import ImageSource
    from capsearch.index import ModelRef, SearchIndex
    from capsearch.serve import Service, bind, uvicorn_server

    names = ["red circle #1?.png", "ümlaut & co/blue%20square.png", "plain.png"]
    for i, name in enumerate(names):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (200, 60 * i, 20)).save(tmp_path / name)
    vectors = np.eye(3, 4, dtype=np.float32)
    captions = ["a red circle", "a blue square", "a plain"]
    index = SearchIndex(names, vectors, captions, vectors, ImageSource(tmp_path), ModelRef("clip"))
    service = Service(index, lambda queries: np.tile(vectors[0], (len(queries), 1)), str(tmp_path))
    sock = bind("127.0.0.1", 0)
    server = uvicorn_server(service, idle_seconds=1)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    server.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield server
    server.should_exit = True
    thread.join(timeout=30)


def test_image_urls_are_percent_encoded_for_any_file_name(odd_names_server):
    odd_names_server = odd_names_server.url
    answer = api_search(odd_names_server, "anything", k=3)
    assert [hit["file_name"] for hit in answer["hits"]] == ["red circle #1?.png", "blue%20square.png", "plain.png"]
    first = answer["hits"][0]
    assert first["image_url"] == "/api/images/red%20circle%20%231%3F.png"
    for hit in answer["hits"]:
        for key in ("image_url", "thumb_url"):
            with urllib.request.urlopen(odd_names_server + hit[key]) as response:
                assert response.status == 200 and response.read(4) in (b"\x89PNG", b"\xff\xd8\xff\xe0")
        info = get(odd_names_server + "/api/info/" + urllib.parse.quote(hit["image_id"], safe="/"))
        assert info["image_id"] == hit["image_id"] and info["image_url"] == hit["image_url"]


def test_connections_that_send_nothing_or_stall_are_closed(odd_names_server):
    import socket

    odd_names_server = odd_names_server.url
    host, port = urllib.parse.urlsplit(odd_names_server).netloc.split(":")
    silent, stalled = socket.create_connection((host, int(port))), socket.create_connection((host, int(port)))
    stalled.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    for connection in (silent, stalled):
        connection.settimeout(10)
        assert connection.recv(1024) == b""  # closed by the server after its 1 s idle limit
        connection.close()
    assert get(odd_names_server + "/api/health")["status"] == "ok"


def test_an_announcement_is_trusted_only_when_its_own_server_answers(tmp_path, server, workspace):
    import socket

    from capsearch.serve import running_server

    announce = tmp_path / "server.json"
    assert running_server(announce) == (None, "no server announced")
    finished = subprocess.Popen(["true"])
    finished.wait()
    announce.write_text(json.dumps({"url": server, "pid": finished.pid, "index": "x"}))
    assert running_server(announce)[1].endswith(f"(pid {finished.pid}) is no longer running")
    live = json.loads((workspace / "data" / "index" / "server.json").read_text())
    announce.write_text(json.dumps({**live, "index": "another index"}))  # a live server, but not this index's
    assert running_server(announce)[1] == f"what answers at {server} is not the server announced in {announce}"
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(1)  # accepts connections, never answers
    url = f"http://127.0.0.1:{mute.getsockname()[1]}"
    announce.write_text(json.dumps({**live, "url": url}))
    assert running_server(announce, timeout=0.5) == (
        None,
        f"the server at {url} did not answer its health check within 0.5 s",
    )
    mute.close()
    assert running_server(workspace / "data" / "index" / "server.json") == (server, "")


def test_search_says_why_it_does_not_use_an_announced_server(demo_run, tmp_path):
    copy = tmp_path / "ws"
    shutil.copytree(demo_run, copy, symlinks=True)
    finished = subprocess.Popen(["true"])
    finished.wait()
    (copy / "data" / "index" / "server.json").write_text(
        json.dumps({"url": "http://127.0.0.1:9", "pid": finished.pid, "index": str(copy)})
    )
    result = capsearch_here("search", "a red circle", "-k", "2", cwd=copy)
    assert result.returncode == 0, result.stderr
    assert f"(pid {finished.pid}) is no longer running; searching in this process instead" in result.stderr
    assert len([line for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]) == 2


def test_a_busy_port_is_reported_before_anything_loads_and_open_hosts_are_warned_about(tmp_path):
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    refused = capsearch("serve", "--port", str(port), cwd=tmp_path, timeout=60)  # no index here at all
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"capsearch serve: cannot listen on 127.0.0.1:{port}: ")
    busy.close()
    exposed = capsearch("serve", "--host", "0.0.0.0", "--port", "0", cwd=tmp_path, timeout=60)
    assert "warning: listening on 0.0.0.0, reachable from other machines" in exposed.stderr
    assert "run the pipeline first" in exposed.stderr and exposed.returncode == 1


def test_the_page_by_keyboard_with_odd_names_and_a_lost_server(odd_names_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium_driver()
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(odd_names_server.url)
        wait.until(lambda b: "images" in b.find_element(By.ID, "status").text)
        browser.find_element(By.ID, "query").send_keys("anything", Keys.ENTER)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".hit")) == 3)
        wait.until(
            lambda b: all(i.get_property("naturalWidth") > 0 for i in b.find_elements(By.CSS_SELECTOR, ".hit img"))
        )
        tiles = browser.find_elements(By.CSS_SELECTOR, ".hit")
        assert [t.find_element(By.CSS_SELECTOR, ".file").text for t in tiles][:2] == [
            "red circle #1?.png",
            "blue%20square.png",
        ]
        score, caption = (tiles[0].find_element(By.CSS_SELECTOR, c) for c in (".score", ".caption"))
        assert score.location["y"] + score.size["height"] <= caption.location["y"]  # the score has a line of its own
        assert "Rank 1" in tiles[0].get_attribute("aria-label") and tiles[0].get_attribute("role") == "button"
        focused = browser.find_element(By.ID, "query")
        for _ in range(6):  # from the query box, Tab reaches the first tile after the controls
            focused.send_keys(Keys.TAB)
            focused = browser.switch_to.active_element
            if focused.get_attribute("data-image-id"):
                break
        assert focused.get_attribute("data-image-id") == "red circle #1?.png"  # the tiles are in the tab order
        focused.send_keys(Keys.ENTER)
        wait.until(lambda b: b.find_element(By.ID, "viewer").get_attribute("open") is not None)
        assert browser.find_element(By.ID, "viewer-file").text == "red circle #1?.png"
        browser.find_element(By.ID, "viewer-close").click()
        odd_names_server.should_exit = True  # the server goes away under the page
        time.sleep(1.5)
        browser.find_element(By.ID, "search-button").click()
        wait.until(lambda b: "cannot be reached" in b.find_element(By.ID, "message").text)
        assert browser.find_element(By.ID, "message").get_attribute("class") == "error"
    finally:
        browser.quit()
