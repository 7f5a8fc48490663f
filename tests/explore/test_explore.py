"""adamkit explore: the server's answers, its bad-input messages, and the page in a real
(headless Chromium) browser, whose shown numbers must equal the reference's."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from adamkit.explore import Settings, run
from adamkit.explore.compute import BadSetting

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "adamkit", "explore", "--no-browser", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert f"http://127.0.0.1:{port}/" in line, line
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_run_is_the_reference_and_fast_enough():
    result = run(Settings(function="rosenbrock", steps=500))
    assert set(result["paths"]) == {"SGD", "Momentum", "RMSProp", "Adam"}
    adam = result["inspect"]
    # Adam's first step: m̂_1 = g_1, √v̂_1 = |g_1|, so the update is α·g/(|g|+ε).
    g = adam["m_hat"][0]
    assert adam["sqrt_v_hat"][0] == pytest.approx([abs(v) for v in g])
    assert adam["update"][0] == pytest.approx([0.05 * v / (abs(v) + 1e-8) for v in g])
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run(Settings(function="rosenbrock", steps=500))
        times.append(time.perf_counter() - start)
    print(f"500 steps x 4 optimizers: {min(times) * 1e3:.0f} ms")  # reported, not asserted


def test_bias_correction_off_changes_adams_first_step_as_the_equations_say():
    on = run(Settings(steps=5))["inspect"]["update"][0]
    off = run(Settings(steps=5, bias_correction=False))["inspect"]["update"][0]
    # m_1 = (1-β1)·g and v_1 = (1-β2)·g²: uncorrected, the first step is α·(1-β1)/√(1-β2).
    ratio = (1 - 0.9) / (1 - 0.999) ** 0.5
    assert off == pytest.approx([ratio * u for u in on], rel=1e-6)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("function=sphere", "unknown function 'sphere'; choose from rosenbrock"),
        ("beta1=fast", "beta1 must be a number; got 'fast'"),
        ("eps=2", "eps must lie in [0, 1]; got 2"),
        ("inspect=Adagrad", "unknown optimizer 'Adagrad'"),
        ("steps=0", "steps must lie in [1, 2000]"),
    ],
)
def test_bad_settings_get_a_clear_400(server, query, message):
    status, body = _get(f"{server}/api/run?{query}")
    assert status == 400 and message in body["error"]
    with pytest.raises(BadSetting, match=r"must|unknown"):
        Settings.from_query(dict([query.split("=")]))


def test_port_in_use_is_one_clear_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "adamkit", "explore", "--no-browser", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert f"port {port} is in use" in proc.stderr and "Traceback" not in proc.stderr


def test_server_binds_to_localhost_only(server):
    assert server.startswith("http://127.0.0.1:")
    status, body = _get(f"{server}/api/functions")
    assert status == 200 and "rosenbrock" in body["functions"]


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no Chromium and chromedriver here (.ci/run installs Debian's)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=driver_path)
    return webdriver.Chrome(options=options, service=service)


def _wait_for_updates(driver, count: int, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = driver.execute_script("return Number(document.body.dataset.updates || 0)")
        if done >= count:
            return
        time.sleep(0.05)
    error = driver.find_element("id", "error").text
    raise AssertionError(f"the page did not update ({error!r})")


def _shown(driver) -> dict[str, list[float]]:
    out = {}
    for key in ("m_hat", "sqrt_v_hat", "effective_lr", "update"):
        texts = [driver.find_element("id", f"{key}-{c}").text for c in "xy"]
        out[key] = [float(t) for t in texts]
    return out


def test_page_in_a_browser_moves_with_a_slider_and_shows_the_references_numbers(server):
    driver = _browser()
    try:
        driver.get(server + "/")
        _wait_for_updates(driver, 1)
        before = driver.execute_script("return window.explorer.result")
        # Move the β1 slider as a user would (value, then the input event).
        driver.execute_script(
            "const s = document.getElementById('beta1'); s.value = '0.5';"
            "s.dispatchEvent(new Event('input'));"
        )
        _wait_for_updates(driver, 2)
        after = driver.execute_script("return window.explorer.result")
        assert after["paths"]["Adam"]["points"] != before["paths"]["Adam"]["points"]
        assert after["inspect"]["m_hat"] != before["inspect"]["m_hat"]
        # Scrub to step 7 and read the numbers the page shows.
        driver.execute_script(
            "const s = document.getElementById('scrub'); s.value = '7';"
            "s.dispatchEvent(new Event('input'));"
        )
        shown = _shown(driver)
        query = driver.execute_script("return Object.fromEntries(query())")
        expected = run(Settings.from_query(query))["inspect"]
        for key, values in shown.items():
            assert values == pytest.approx(expected[key][6], rel=1e-5), key
        assert expected["m_hat"][6] != pytest.approx(before["inspect"]["m_hat"][6])
        screenshot = os.environ.get("ADAMKIT_EXPLORER_SCREENSHOT")
        if screenshot:  # how docs/img/explorer.png is made
            driver.save_screenshot(str(ROOT / screenshot))
    finally:
        driver.quit()
