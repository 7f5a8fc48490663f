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

import numpy as np
import pytest
import torch

from adamkit.explore import Settings, run
from adamkit.explore.compute import (
    OPTIMIZERS,
    BadSetting,
    clear_cache,
    contour,
    gradients,
    labels,
    trajectories,
)
from adamkit.explore.variants import EXTRAS, VARIANTS
from adamkit.reference import adafactor, adam, ademamix, adopt, lion, schedule_free, stable_adamw
from adamkit.viz.functions import FUNCTIONS, get

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
    assert set(result["paths"]) == set(OPTIMIZERS)
    assert {"AdamW", "NAdam", "RAdam", "Adamax"} <= set(OPTIMIZERS)
    assert {"AdEMAMix", "ADOPT", "Lion", "Schedule-Free"} <= set(OPTIMIZERS)
    assert {"StableAdamW", "Cautious Adam", "Adafactor"} <= set(OPTIMIZERS)
    adam = result["inspect"]
    # Adam's first step: m̂_1 = g_1, √v̂_1 = |g_1|, so the update is α·g/(|g|+ε).
    g = adam["m_hat"][0]
    assert adam["sqrt_v_hat"][0] == pytest.approx([abs(v) for v in g])
    assert adam["update"][0] == pytest.approx([0.05 * v / (abs(v) + 1e-8) for v in g])
    times, one = [], []
    for k in range(3):
        clear_cache()
        start = time.perf_counter()
        run(Settings(function="rosenbrock", steps=500))
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        run(Settings(function="rosenbrock", steps=500, lrs={"Adam": 0.01 * (k + 1)}))
        one.append(time.perf_counter() - start)
    print(  # reported, not asserted
        f"500 steps x {len(OPTIMIZERS)} optimizers: {min(times) * 1e3:.0f} ms; "
        f"one α changed: {min(one) * 1e3:.0f} ms"
    )


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_gradients_are_the_functions_own_derivative(name):
    function = get(name)
    xy = np.random.default_rng(0).normal(size=(8, 2)) * 2
    f, g = gradients(function, xy)
    points = torch.tensor(xy, requires_grad=True)
    expected_f = function(points)
    (expected_g,) = torch.autograd.grad(expected_f.sum(), points)
    np.testing.assert_allclose(f, expected_f.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(g, expected_g.numpy(), rtol=1e-12, atol=1e-12)


def _direction(name: str, ins: dict, s: Settings) -> np.ndarray:
    """What the effective lr multiplies into the update, from the panels' own series."""
    first = np.array(ins["m_hat"])
    if name == "AdEMAMix":  # η·(m̂1 + α·m2)/(√v̂+ε): the slow EMA is an extra series
        return first + s.alpha * np.array(ins["extras"][0]["data"])
    if name == "Lion":  # α·sign(c)
        return np.sign(first)
    if name == "Cautious Adam":  # α·s·m̂/(√v̂+ε): the mask's scale s is an extra series
        return first * np.array(ins["extras"][0]["data"])
    return first


def test_each_optimizers_panels_are_what_moved_its_point():
    """The update panel is what was subtracted from the point; it is the effective lr times
    the first moment where the optimizer has one (AdamW's decay comes first; AdEMAMix adds
    α·m2, Lion takes c's sign, Cautious Adam's mask scales it), else times g (Adafactor)."""
    s = Settings(function="beale", steps=40, weight_decay=0.1)
    for name in OPTIMIZERS:
        result = run(Settings(**{**s.__dict__, "inspect": name}))
        ins, points = result["inspect"], np.array(result["paths"][name]["points"])
        lr = result["paths"][name]["lr"]
        decay = 1 - lr * s.weight_decay if name == "AdamW" else 1.0
        update = np.array(ins["update"])
        np.testing.assert_allclose(points[1:], points[:-1] * decay - update, rtol=1e-12, atol=1e-15)
        if ins["labels"]["m_hat"] is not None:
            product = np.array(ins["effective_lr"]) * _direction(name, ins, s)
            np.testing.assert_allclose(product, update, rtol=1e-9, atol=1e-15, err_msg=name)
        elif name == "Adafactor":  # no first moment: its effective lr multiplies g
            _, g = gradients(get(s.function), points[:-1])
            product = np.array(ins["effective_lr"]) * g
            np.testing.assert_allclose(product, update, rtol=1e-9, atol=1e-15, err_msg=name)
        for key, label in ins["labels"].items():
            assert (label is None) == (ins[key][0] is None), (name, key)
        assert [e["key"] for e in ins["extras"]] == [e.key for e in EXTRAS.get(name, ())]
        for extra in ins["extras"]:
            assert len(extra["data"]) == s.steps and extra["label"] and extra["role"], extra


# Settings unlike every default, so that each variant must take the page's β1, β2, ε, β3, α.
_VARIANT_SETTINGS = Settings(
    function="rosenbrock", beta1=0.8, beta2=0.99, eps=1e-6, beta3=0.995, alpha=3.0, steps=60
)


def _reference_hyper(name: str, lr: float, s: Settings):
    """Each variant's reference hyperparameters as its docstring defines them, for the page's
    settings: no weight decay (λ is AdamW's), Lion's own β2, Adafactor's ε1 the page's ε."""
    if name == "AdEMAMix":
        return ademamix, ademamix.AdEMAMixHyper(
            lr=lr, beta1=s.beta1, beta2=s.beta2, beta3=s.beta3, alpha=s.alpha, eps=s.eps,
            weight_decay=0.0,
        )  # fmt: skip
    if name == "ADOPT":
        return adopt, adopt.ADOPTHyper(lr=lr, beta1=s.beta1, beta2=s.beta2, eps=s.eps)
    if name == "Lion":
        return lion, lion.LionHyper(lr=lr, beta1=s.beta1, beta2=0.99)
    if name == "StableAdamW":
        return stable_adamw, stable_adamw.StableAdamWHyper(
            lr=lr, beta1=s.beta1, beta2=s.beta2, eps=s.eps, weight_decay=0.0
        )
    if name == "Cautious Adam":
        return adam, adam.AdamHyper(lr=lr, beta1=s.beta1, beta2=s.beta2, eps=s.eps, cautious=True)
    if name == "Adafactor":
        return adafactor, adafactor.AdafactorHyper(lr=lr, eps1=s.eps)
    return schedule_free, schedule_free.ScheduleFreeHyper(
        lr=lr, beta1=s.beta1, beta2=s.beta2, eps=s.eps
    )


def _stepped_directly(name: str, s: Settings):
    """The variant's reference stepped by hand from the function's start: the points, and per
    step (param before, its gradient, state before, state after, aux)."""
    function = get(s.function)
    module, hyper = _reference_hyper(name, contour(s.function)["lrs"][name], s)
    param = np.array(function.start, dtype=np.float64)
    state = module.init(param)
    points, steps = [param], []
    for _ in range(s.steps):
        _, g = gradients(function, param[None])
        new, after, aux = module.step(param, g[0], state, hyper)
        steps.append((param, g[0], state, after, aux))
        param, state = new, after
        points.append(param)
    return hyper, np.array(points), steps


# StableAdamW's clipping engages on Himmelblau within those steps (not on Rosenbrock).
_VARIANT_FUNCTION = {"StableAdamW": "himmelblau"}


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variants_path_and_series_are_its_reference_stepped_directly(name):
    clear_cache()
    function = _VARIANT_FUNCTION.get(name, _VARIANT_SETTINGS.function)
    overrides = {"function": function, "inspect": name, "show": (name,)}
    s = Settings(**{**_VARIANT_SETTINGS.__dict__, **overrides})
    result = run(s)
    hyper, points, steps = _stepped_directly(name, s)
    np.testing.assert_array_equal(np.array(result["paths"][name]["points"]), points)
    ins = result["inspect"]
    extras = {e["key"]: e["data"] for e in ins["extras"]}
    auxes = [aux for *_, aux in steps]
    after = [a for *_, a, _ in steps]
    grads = np.array([g for _, g, *_ in steps])

    def same(series, expected):
        np.testing.assert_array_equal(np.array(series, dtype=float), np.array(expected))

    if name == "AdEMAMix":
        same(ins["m_hat"], [a.m1_hat for a in auxes])
        same(extras["m2"], [a.m2 for a in auxes])
        same(ins["sqrt_v_hat"], [a.sqrt_v_hat for a in auxes])
        same(ins["update"], [a.update for a in auxes])
        assert all(a.alpha == 3.0 and a.beta3 == 0.995 for a in auxes)  # no warmups
    elif name == "ADOPT":
        same(ins["m_hat"], [st.m for st in after])
        same(ins["sqrt_v_hat"], [a.denom for a in auxes])
        same(extras["n"], [a.normalized_grad for a in auxes])
        same(ins["update"], [a.update for a in auxes])
        # the first call only fills v: no clip bound, nothing moves; then (t-1)^¼
        assert extras["clip"][0] is None and ins["update"][0] == [0.0, 0.0]
        assert (
            extras["clip"][1:]
            == [a.clip for a in auxes[1:]]
            == [(t - 1) ** 0.25 for t in range(2, s.steps + 1)]
        )
        assert np.abs(np.array(extras["n"])[1:]).max() <= s.steps**0.25
    elif name == "Lion":
        same(ins["m_hat"], [a.interpolation for a in auxes])
        same(extras["m"], [st.m for st in after])
        same(ins["update"], [a.update for a in auxes])
        assert ins["sqrt_v_hat"] == [None] * s.steps
        # every coordinate moves by exactly α a step
        assert set(np.abs(np.array(ins["update"])).ravel()) == {hyper.lr}
    elif name == "StableAdamW":
        same(ins["m_hat"], [st.m for st in after])  # its state holds m̂ and v̂
        same(ins["sqrt_v_hat"], [np.sqrt(st.v) for st in after])
        same(ins["effective_lr"], [a.lr / a.denom for a in auxes])
        same(ins["update"], [a.update for a in auxes])
        same(extras["rms"], [a.rms for a in auxes])
        same(extras["lr_used"], [a.lr for a in auxes])
        # rms = √mean(g²/max(v̂, ε²)), and the lr is divided by it where it passes 1
        v = np.array([st.v for st in after])
        rms = np.sqrt(np.mean(grads**2 / np.maximum(v, s.eps**2), axis=1))
        np.testing.assert_allclose(extras["rms"], rms, rtol=1e-12)
        np.testing.assert_allclose(extras["lr_used"], hyper.lr / np.maximum(1, rms), rtol=1e-12)
        assert extras["rms"][0] == 1.0 and sum(r > 1 for r in extras["rms"]) > 5
    elif name == "Cautious Adam":
        same(ins["m_hat"], [a.m_hat for a in auxes])
        same(ins["sqrt_v_hat"], [np.sqrt(a.v_hat) for a in auxes])
        same(ins["effective_lr"], [a.effective_lr for a in auxes])
        same(ins["update"], [a.update for a in auxes])
        # s = mask/max(mean(mask), 1e-3), mask = [m̂·g > 0]: on two coordinates 0, 1 or 2
        mask = np.array(ins["m_hat"]) * grads > 0
        scale = mask / np.maximum(mask.mean(axis=1, keepdims=True), 1e-3)
        same(extras["mask"], scale)
        assert set(np.ravel(extras["mask"])) == {0.0, 1.0, 2.0}
        # the update is plain Adam's from the same state, scaled by s
        plain = adam.AdamHyper(lr=hyper.lr, beta1=s.beta1, beta2=s.beta2, eps=s.eps)
        unmasked = [adam.step(p, g, st, plain)[2].update for p, g, st, *_ in steps]
        same(ins["update"], np.array(unmasked) * scale)
    elif name == "Adafactor":
        same(ins["sqrt_v_hat"], [np.sqrt(np.maximum(a.var_estimate, s.eps**2)) for a in auxes])
        same(ins["update"], [a.alpha / a.clip_divisor * a.update for a in auxes])
        same(extras["rho"], [a.rho for a in auxes])
        same(extras["alpha_t"], [a.alpha for a in auxes])
        same(extras["clip"], [a.clip_divisor for a in auxes])
        # V_1 = g_1² (β̂2_1 = 0); ρₜ = min(ρ, 1/√t); αₜ = max(1e-3, RMS(x, y))·ρₜ; clipping engages
        np.testing.assert_allclose(ins["sqrt_v_hat"][0], np.abs(grads[0]), rtol=1e-15)
        t = np.arange(1, s.steps + 1)
        np.testing.assert_allclose(extras["rho"], np.minimum(hyper.lr, 1 / np.sqrt(t)))
        rms = np.sqrt(np.mean(points[:-1] ** 2, axis=1))
        np.testing.assert_allclose(
            extras["alpha_t"], np.maximum(1e-3, rms) * extras["rho"], rtol=1e-12
        )
        assert sum(c > 1 for c in extras["clip"]) > 5
        np.testing.assert_allclose(
            np.array(ins["update"]), points[:-1] - points[1:], rtol=1e-12, atol=1e-15
        )
        assert ins["m_hat"] == [None] * s.steps
    else:
        same(ins["sqrt_v_hat"], [a.denom - hyper.eps for a in auxes])
        same(ins["effective_lr"], [a.lr / a.denom for a in auxes])
        same(extras["z_step"], [a.lr * a.normalized_grad for a in auxes])
        same(extras["c"], [a.c for a in auxes])
        # constant α, r = 0: every z weighs the same in the average x, so c = 1/t
        np.testing.assert_allclose(extras["c"], 1 / np.arange(1, s.steps + 1), rtol=1e-15)
        # the plotted y: what the reference's step returned, moved by the update series
        np.testing.assert_allclose(
            np.array(ins["update"]), points[:-1] - points[1:], rtol=1e-12, atol=1e-15
        )
        assert result["paths"][name]["point"] == "y" and ins["m_hat"] == [None] * s.steps


def test_variants_labels_lrs_and_cache_keys():
    assert labels("AdEMAMix")["update"] == "η·(m̂1+α·m2)/(√v̂+ε)"
    assert labels("Lion")["sqrt_v_hat"] is None and labels("Lion")["update"] == "α·sign(c)"
    assert labels("ADOPT")["sqrt_v_hat"] == "max(√vₜ₋₁, ε)"
    assert labels("Schedule-Free")["m_hat"] is None
    assert labels("StableAdamW")["update"] == "αₜ·m̂/(√v̂+ε)"
    assert labels("Cautious Adam")["update"] == "α·s·m̂/(√v̂+ε)"
    assert labels("Adafactor")["m_hat"] is None
    assert labels("Adafactor")["sqrt_v_hat"] == "max(√V, ε)"
    symbols = contour("rosenbrock")["lr_symbols"]
    assert symbols["AdEMAMix"] == "η" and symbols["Lion"] == "α" and symbols["Adafactor"] == "ρ"
    for name in FUNCTIONS:  # the defaults' rule: about as close to a minimum as Adam in 500 steps
        lrs = contour(name)["lrs"]
        assert lrs["Lion"] <= lrs["Adam"], name  # sign steps of exactly α
        result = run(Settings(function=name, steps=500, show=(*VARIANTS, "Adam")))
        minima = np.array(get(name).minima)

        def distance(opt, result=result, minima=minima):
            end = np.array(result["paths"][opt]["points"][-1])
            return float(np.min(np.hypot(*(minima - end).T)))

        for opt in VARIANTS:  # (one that moves by ~α a step cannot settle closer than α)
            if (name, opt) == ("rosenbrock", "Adafactor"):  # its relative step stalls at 0
                assert np.hypot(*result["paths"][opt]["points"][-1]) < 1e-2
                continue
            assert distance(opt) <= max(2 * distance("Adam"), 3 * lrs[opt]), (name, opt)
    # Each variant's trajectory depends on its own settings only.
    clear_cache()
    s = Settings(function="saddle", steps=30)
    assert set(trajectories(s)[1]) == set(OPTIMIZERS)
    beta3 = Settings(**{**s.__dict__, "beta3": 0.99})
    assert trajectories(beta3)[1] == ["AdEMAMix"]
    assert trajectories(Settings(**{**beta3.__dict__, "alpha": 2.0}))[1] == ["AdEMAMix"]
    beta2 = Settings(**{**s.__dict__, "beta2": 0.99})
    untouched = {"SGD", "Momentum", "Lion", "Adafactor"}  # their β2 is their own
    assert trajectories(beta2)[1] == [n for n in OPTIMIZERS if n not in untouched]
    eps = Settings(**{**s.__dict__, "eps": 1e-6})  # Adafactor's ε1 floors √V at it
    untouched = {"SGD", "Momentum", "Lion"}
    assert trajectories(eps)[1] == [n for n in OPTIMIZERS if n not in untouched]
    assert trajectories(Settings(**{**s.__dict__, "weight_decay": 0.5}))[1] == ["AdamW"]
    assert trajectories(Settings(**{**s.__dict__, "lrs": {"Lion": 0.02}}))[1] == ["Lion"]


def test_labels_say_m_and_v_without_bias_correction():
    assert labels("Adam", True)["m_hat"] == "m̂" and labels("Adam", True)["sqrt_v_hat"] == "√v̂"
    for name in ("Adam", "AdamW"):
        off = run(Settings(steps=5, bias_correction=False, inspect=name))["inspect"]["labels"]
        assert off["m_hat"] == "m" and off["sqrt_v_hat"] == "√v" and "v̂" not in off["effective_lr"]
    assert labels("RMSProp")["m_hat"] is None and labels("SGD")["sqrt_v_hat"] is None


def test_only_what_changed_is_recomputed():
    clear_cache()
    s = Settings(function="himmelblau", steps=200)
    assert run(s)["computed"] == list(OPTIMIZERS)
    assert run(s)["computed"] == []
    adam_lr = Settings(**{**s.__dict__, "lrs": {"Adam": 0.02}})
    assert run(adam_lr)["computed"] == ["Adam"]
    no_bias = Settings(**{**s.__dict__, "bias_correction": False})
    assert run(no_bias)["computed"] == ["Adam", "AdamW"]
    assert run(Settings(**{**s.__dict__, "weight_decay": 0.3}))["computed"] == ["AdamW"]
    assert run(Settings(**{**s.__dict__, "steps": 120}))["computed"] == []
    longer = Settings(**{**s.__dict__, "steps": 300})
    continued = run(longer)  # the cached 200 steps go on to 300
    assert continued["computed"] == list(OPTIMIZERS)
    clear_cache()
    fresh = run(longer)
    assert continued["paths"] == fresh["paths"] and continued["inspect"] == fresh["inspect"]


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
        ("inspect=ScheduleFree", "unknown optimizer 'ScheduleFree'; choose from SGD"),
        ("show=Adam,Lamb", "unknown optimizer 'Lamb'"),
        ("beta3=1", "beta3 must lie in [0, 0.99999]; got 1"),
        ("alpha=-1", "alpha must lie in [0, 100]; got -1"),
        ("lr_Lion=0", "lr_Lion must lie in [1e-08, 1000]; got 0"),
        ("lr_Schedule-Free=fast", "lr_Schedule-Free must be a number; got 'fast'"),
    ],
)
def test_bad_settings_get_a_clear_400(server, query, message):
    status, body = _get(f"{server}/api/run?{query}")
    assert status == 400 and message in body["error"]
    with pytest.raises(BadSetting, match=r"must|unknown"):
        Settings.from_query(dict([query.split("=")]))


def test_a_name_with_a_space_goes_through_the_query(server):
    query = "show=Adam,Cautious+Adam&inspect=Cautious+Adam&lr_Cautious+Adam=0.02&steps=5"
    status, body = _get(f"{server}/api/run?{query}")
    assert status == 200 and set(body["paths"]) == {"Adam", "Cautious Adam"}
    assert body["paths"]["Cautious Adam"]["lr"] == 0.02
    assert body["inspect"]["name"] == "Cautious Adam"


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
        out[key] = [None if t == "–" else float(t) for t in texts]  # –: it has none
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
    finally:
        driver.quit()


def _set(driver, element_id: str, value: str | bool) -> None:
    """Move a control as a user would: its value, then the input event."""
    prop = "checked" if isinstance(value, bool) else "value"
    driver.execute_script(
        f"const s = document.getElementById(arguments[0]); s.{prop} = arguments[1];"
        "s.dispatchEvent(new Event('input'));",
        element_id,
        value,
    )


def _settled(driver, timeout: float = 30.0) -> None:
    """Wait until no request is on its way or waiting."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if driver.execute_script(
            "const e = window.explorer; return !!e.result && !e.inFlight && !e.pending"
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"the page did not settle ({driver.find_element('id', 'error').text!r})")


_PANELS = """
return ["m_hat", "sqrt_v_hat", "effective_lr", "update"].map((key) => {
  const svg = document.querySelector(`#panel-${key} svg`);
  const entries = [...svg.querySelectorAll(".legend .legend-entry")];
  return {
    key, label: svg.dataset.label || null, empty: svg.dataset.empty === "1",
    title: document.getElementById("title-" + key).textContent,
    row: document.getElementById("label-" + key).textContent,
    yTicks: [...svg.querySelectorAll(".y-ticks .tick text")].map((t) => t.textContent),
    xTicks: [...svg.querySelectorAll(".x-ticks .tick text")].map((t) => t.textContent),
    axes: svg.querySelectorAll("line.axis").length,
    zero: svg.querySelectorAll("line.zero").length,
    legend: entries.map((e) => [e.dataset.coord, e.textContent,
                                e.querySelector("line").getAttribute("stroke-dasharray") || ""]),
    lines: [...svg.querySelectorAll("path.series")].map((p) => [p.dataset.coord, p.getAttribute("d").length]),
  };
});
"""


def test_panels_have_axes_and_a_legend_and_follow_the_switches(server):
    driver = _browser()
    try:
        driver.get(server + "/")
        _wait_for_updates(driver, 1)
        _settled(driver)
        # Every optimizer of the family has a path, a colour and a show switch.
        result = driver.execute_script("return window.explorer.result")
        assert set(result["paths"]) == set(OPTIMIZERS)
        for name in OPTIMIZERS:
            label = driver.find_element("id", f"show_{name}").find_element("xpath", "..")
            assert label.text.strip() == name and label.get_attribute("style")
        panels = driver.execute_script(_PANELS)
        for p in panels:
            assert p["axes"] == 2 and p["zero"] == 1, p
            assert "0" in p["yTicks"] and len(p["yTicks"]) >= 3, p
            assert p["xTicks"][0] == "1" and "500" in p["xTicks"], p
            # the legend says which line is which coordinate: x solid, y dashed
            assert p["legend"] == [["x", "x", ""], ["y", "y", "5 3"]], p
            assert [c for c, _ in p["lines"]] == ["x", "y"] and all(n > 100 for _, n in p["lines"])
        assert [p["label"] for p in panels] == ["m̂", "√v̂", "α/(√v̂+ε)", "α·m̂/(√v̂+ε)"]
        assert [p["row"] for p in panels] == [p["label"] for p in panels]
        assert "m̂" in panels[0]["title"] and "Adam" in panels[0]["title"]
        screenshot = os.environ.get("ADAMKIT_EXPLORER_SCREENSHOT")
        if screenshot:  # how docs/img/explorer.png is made: the defaults, at step 60
            _set(driver, "scrub", "60")
            driver.save_screenshot(str(ROOT / screenshot))
            _set(driver, "scrub", "1")

        # Bias correction off: Adam's moments are m and √v, in the panels and the table.
        _set(driver, "bias_correction", False)
        _settled(driver)
        off = driver.execute_script(_PANELS)
        assert [p["label"] for p in off] == ["m", "√v", "α/(√v+ε)", "α·m/(√v+ε)"]
        assert [p["row"] for p in off] == ["m", "√v", "α/(√v+ε)", "α·m/(√v+ε)"]
        assert all("v̂" not in p["title"] and "m̂" not in p["title"] for p in off)
        _set(driver, "bias_correction", True)
        _settled(driver)
        assert driver.execute_script(_PANELS)[0]["label"] == "m̂"

        # A new optimizer inspected: its own symbols, and the reference's numbers.
        driver.execute_script(
            "const s = document.getElementById('inspect'); s.value = 'NAdam';"
            "s.dispatchEvent(new Event('input'));"
        )
        _settled(driver)
        nadam = driver.execute_script(_PANELS)
        assert nadam[0]["label"] == "m̄" and "NAdam" in nadam[0]["title"]
        _set(driver, "scrub", "9")
        query = driver.execute_script("return Object.fromEntries(query())")
        expected = run(Settings.from_query(query))["inspect"]
        for key, values in _shown(driver).items():
            assert values == pytest.approx(expected[key][8], rel=1e-5), key
        # SGD keeps no moments: those panels say so instead of drawing.
        driver.execute_script(
            "const s = document.getElementById('inspect'); s.value = 'SGD';"
            "s.dispatchEvent(new Event('input'));"
        )
        _settled(driver)
        sgd = driver.execute_script(_PANELS)
        assert [p["empty"] for p in sgd] == [True, True, False, False]
        assert sgd[0]["row"] == "–"
    finally:
        driver.quit()


def test_a_drag_sends_few_requests_and_ends_on_the_final_setting(server):
    driver = _browser()
    try:
        driver.get(server + "/")
        _wait_for_updates(driver, 1)
        _settled(driver)
        before = driver.execute_script("return window.explorer.requests")
        low = float(driver.execute_script("return document.getElementById('lr_Adam').min"))
        values = [f"{low + 1 + 0.05 * k:.2f}" for k in range(20)]
        driver.execute_script(  # 20 moves of a drag, faster than the server answers
            "const s = document.getElementById('lr_Adam');"
            "for (const v of arguments[0]) { s.value = v; s.dispatchEvent(new Event('input')); }",
            values,
        )
        _settled(driver)
        sent = driver.execute_script("return window.explorer.requests") - before
        assert sent == 2, sent  # one on its way, then one for where the slider ended
        result = driver.execute_script("return window.explorer.result")
        assert result["paths"]["Adam"]["lr"] == pytest.approx(10 ** float(values[-1]), rel=1e-5)
        assert result["computed"] == ["Adam"]  # the others came from the cache
    finally:
        driver.quit()


_EXTRA_PANELS = """
return [...document.querySelectorAll("#panels .panel.extra svg")].map((svg) => ({
  key: svg.dataset.series, label: svg.dataset.label || null, empty: svg.dataset.empty === "1",
  title: document.getElementById("title-" + svg.dataset.series).textContent,
  row: document.getElementById("label-" + svg.dataset.series).textContent,
  legend: [...svg.querySelectorAll(".legend .legend-entry")].map((e) => e.textContent),
  lines: [...svg.querySelectorAll("path.series")].map((p) => p.getAttribute("d").length),
}));
"""

# What each variant's panels show: the four common ones' labels (None: "keeps no ..."), and its
# extra series' labels.
_VARIANT_PANELS = {
    "AdEMAMix": (["m̂1", "√v̂", "η/(√v̂+ε)", "η·(m̂1+α·m2)/(√v̂+ε)"], ["m2"]),
    "ADOPT": (["m", "max(√vₜ₋₁, ε)", "α", "α·m"], ["n", "(t-1)^¼"]),
    "Lion": (["c", None, "α", "α·sign(c)"], ["m"]),
    "Schedule-Free": ([None, "√v̂", "α/(√v̂+ε)", "yₜ - yₜ₊₁"], ["α·u", "c"]),
    "StableAdamW": (["m̂", "√v̂", "αₜ/(√v̂+ε)", "αₜ·m̂/(√v̂+ε)"], ["rms", "αₜ"]),
    "Cautious Adam": (["m̂", "√v̂", "α/(√v̂+ε)", "α·s·m̂/(√v̂+ε)"], ["s"]),
    "Adafactor": (
        [None, "max(√V, ε)", "αₜ/(max(1, RMS(U))·max(√V, ε))", "αₜ·U/max(1, RMS(U))"],
        ["ρₜ", "αₜ", "max(1, RMS(U))"],
    ),
}


def _inspect(driver, name: str) -> None:
    driver.execute_script(
        "const s = document.getElementById('inspect'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input'));",
        name,
    )
    _settled(driver)


def _check_variants_panels(driver, name: str, common: list, extras: list) -> None:
    """Inspect variant ``name`` at step 9: its four panels' labels (None: says it keeps none),
    its extra panels' labels and legends, and the table's numbers, the server's."""
    _inspect(driver, name)
    _set(driver, "scrub", "9")
    panels, extra = driver.execute_script(_PANELS), driver.execute_script(_EXTRA_PANELS)
    assert [p["label"] for p in panels] == common, name
    assert [p["empty"] for p in panels] == [c is None for c in common], name
    assert [p["label"] for p in extra] == extras and not any(p["empty"] for p in extra)
    assert [p["row"] for p in extra] == extras
    scalars = {e.key for e in EXTRAS[name] if e.scalar}
    for p in extra:
        assert name in p["title"] and p["label"] in p["title"], p
        scalar = p["key"] in scalars
        assert p["legend"] == (["x = y"] if scalar else ["x", "y"]), p
        assert len(p["lines"]) == len(p["legend"]) and min(p["lines"]) > 100, p
    query = driver.execute_script("return Object.fromEntries(query())")
    expected = run(Settings.from_query(query))["inspect"]
    for key, values in _shown(driver).items():
        want = expected[key][8]
        assert values == ([None, None] if want is None else pytest.approx(want, rel=1e-5))
    for e in expected["extras"]:
        shown = driver.find_element("id", f"{e['key']}-x").text
        want = e["data"][8] if e["scalar"] else e["data"][8][0]
        assert float(shown) == pytest.approx(want, rel=1e-5), (name, e["key"])


def test_page_shows_the_variants_paths_and_their_own_series(server):
    driver = _browser()
    try:
        driver.get(server + "/")
        _wait_for_updates(driver, 1)
        _settled(driver)
        result = driver.execute_script("return window.explorer.result")
        assert set(VARIANTS) <= set(result["paths"])
        for name in VARIANTS:
            assert len(result["paths"][name]["points"]) == 501, name
            label = driver.find_element("id", f"show_{name}").find_element("xpath", "..")
            assert label.text.strip() == name
        # AdEMAMix's α weighs m2, so its learning rate is η on the page
        lr_label = driver.find_element("css selector", "label[for=lr_AdEMAMix]").text
        assert lr_label == "η AdEMAMix"
        assert driver.find_element("css selector", "label[for=lr_Lion]").text == "α Lion"
        # Adafactor's lr caps its relative step size ρₜ, so it is ρ
        assert driver.find_element("css selector", "label[for=lr_Adafactor]").text == "ρ Adafactor"
        legend = driver.execute_script(
            "const p = window.explorer.result.paths; return pathName('Schedule-Free', "
            "p['Schedule-Free']) + '|' + pathName('Adam', p.Adam)"
        )
        assert legend == "Schedule-Free (y)|Adam"  # its path is y, where g is taken
        assert set(_VARIANT_PANELS) == set(VARIANTS)
        for name, (common, extras) in _VARIANT_PANELS.items():
            _check_variants_panels(driver, name, common, extras)
        # ADOPT's first call only fills v: no clip bound at step 1 (the panel still draws)
        _inspect(driver, "ADOPT")
        _set(driver, "scrub", "1")
        assert driver.find_element("id", "clip-x").text == "–"
        assert driver.find_element("id", "n-x").text == "0.00000"
        # AdEMAMix's β3 moves AdEMAMix alone, and its m2 with it
        _inspect(driver, "AdEMAMix")
        before = driver.execute_script("return window.explorer.result.inspect.extras[0].data")
        _set(driver, "beta3", "0.99")
        _settled(driver)
        after = driver.execute_script("return window.explorer.result")
        assert after["computed"] == ["AdEMAMix"] and after["inspect"]["extras"][0]["data"] != before
        # a variant switched off leaves the plot
        _set(driver, "show_Lion", False)
        _settled(driver)
        assert "Lion" not in driver.execute_script("return window.explorer.result.paths")
    finally:
        driver.quit()
