"""The NumPy references of issue 27's variants against the implementations they are named after.

Every peer is an optional install (requirements-peers.txt, installed with ``-c`` holding torch at
its pin); a test whose peer is missing skips. Each run drives the peer and the reference side by
side for 25 steps on several shapes (an odd size, an empty tensor, a single element), with
gradients that hold exact zeros and, every seventh step, a spike, and checks the parameters and
every slot of the state after every step. float64 throughout, at 1e-10 relative, except
bitsandbytes' CPU kernel, which computes in float32 whatever the parameter's dtype.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from adamkit.reference import adam as ref_adam
from adamkit.reference import ademamix, adopt, cautious, lion, run, schedule_free, stable_adamw
from harness import timm_module as _timm

SHAPES = [(5, 3), (17,), (0,), (2, 3, 2), (1,)]
STEPS = 25
RTOL, ATOL = 1e-10, 1e-13

Getter = Callable[[torch.optim.Optimizer, torch.Tensor], Any]

pytestmark = [  # the peers' own warnings under torch 2.13
    pytest.mark.filterwarnings("ignore:.*is_compiling.*:UserWarning"),
    pytest.mark.filterwarnings(
        "ignore:Use _accelerator_graph_capture_health_check:DeprecationWarning"
    ),
    pytest.mark.filterwarnings("ignore:Parameter `foreach` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:You are using weight_decay:UserWarning"),
]


def _grads(rng: np.random.Generator, t: int) -> list[np.ndarray]:
    out = []
    for shape in SHAPES:
        g = rng.standard_normal(shape)
        if g.size:
            g[rng.random(shape) < 0.15] = 0.0  # exact zeros
            if t % 7 == 3:
                g.flat[rng.integers(g.size)] *= 1e3  # a spike
        out.append(g)
    return out


def _np(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _slots(**keys: str) -> dict[str, Getter]:
    """Reference field -> the peer's per-parameter state key."""
    return {field: (lambda opt, p, key=key: opt.state[p][key]) for field, key in keys.items()}


def _group(**keys: str) -> dict[str, Getter]:
    """Reference field -> the peer's param-group key (group scalars)."""
    return {
        field: (lambda opt, p, key=key: opt.param_groups[0][key]) for field, key in keys.items()
    }


def _drive(
    make_opt: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    module: Any,
    hyper: Any,
    state_map: dict[str, Getter],
    *,
    dtype: torch.dtype = torch.float64,
    rtol: float = RTOL,
    atol: float = ATOL,
    seed: int = 0,
    after_step: Callable[..., Any] | None = None,
) -> list[list[Any]]:
    """Run peer and reference side by side; return the reference's aux of every step."""
    rng = np.random.default_rng(seed)
    start = [torch.tensor(rng.standard_normal(s), dtype=dtype) for s in SHAPES]
    params = [torch.nn.Parameter(t.clone()) for t in start]
    opt = make_opt(params)
    ref_params = [_np(t) for t in start]  # the peer's dtype, computed on in float64
    ref_states = [module.init(p) for p in ref_params]
    auxes = []
    for t in range(STEPS):
        grads = [torch.tensor(g, dtype=dtype) for g in _grads(rng, t)]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()  # some peers overwrite p.grad
        opt.step()
        ref_params, ref_states, aux = run(
            module.step, ref_params, [_np(g) for g in grads], ref_states, hyper
        )
        auxes.append(aux)
        if after_step is not None:
            ref_params, ref_states = after_step(t, opt, ref_params, ref_states)
        for i, (p, rp, rs) in enumerate(zip(params, ref_params, ref_states, strict=True)):
            where = f"step {t + 1}, param {i} {tuple(p.shape)}"
            np.testing.assert_allclose(_np(p), rp, rtol, atol, err_msg=f"param, {where}")
            for field, get in state_map.items():
                np.testing.assert_allclose(
                    _np(get(opt, p)),
                    _np(getattr(rs, field)),
                    rtol,
                    atol,
                    err_msg=f"{field}, {where}",
                )
    return auxes


# --- AdEMAMix --------------------------------------------------------------------------------

WARMUPS = [(None, None), (10, 15)]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize(("t_alpha", "t_beta3"), WARMUPS)
def test_ademamix_vs_bitsandbytes_reference(weight_decay, t_alpha, t_beta3):
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.optim.ademamix import _ReferenceAdEMAMix

    hyper = ademamix.AdEMAMixHyper(
        lr=1e-2, weight_decay=weight_decay, t_alpha=t_alpha, t_beta3=t_beta3
    )
    state_map = {
        "m1": lambda opt, p: opt.state[p]["m1_m2"][0],
        "m2": lambda opt, p: opt.state[p]["m1_m2"][1],
        **_slots(v="nu"),
        **_group(step="step"),
    }
    # One group per parameter: _ReferenceAdEMAMix assigns the scheduled alpha and beta3 back to
    # the loop's variables, so within a group the warmups compound from one parameter to the next
    # (the second parameter of a group gets alpha·(t/T_α)², beta3 of a scheduled beta3).
    auxes = _drive(
        lambda ps: _ReferenceAdEMAMix(
            [{"params": [p]} for p in ps],
            lr=1e-2,
            weight_decay=weight_decay,
            t_alpha=t_alpha,
            t_beta3=t_beta3,
        ),
        ademamix,
        hyper,
        state_map,
    )
    if t_alpha:  # the warmups ran and ended inside the 25 steps
        alphas = [a[0].alpha for a in auxes]
        beta3s = [a[0].beta3 for a in auxes]
        assert alphas[0] == pytest.approx(0.5) and alphas[-1] == 5.0
        assert beta3s == sorted(beta3s) and beta3s[0] < 0.999 and beta3s[-1] == 0.9999


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize(("t_alpha", "t_beta3"), WARMUPS)
def test_ademamix_vs_bitsandbytes_cpu_kernel_float32(weight_decay, t_alpha, t_beta3):
    """bitsandbytes' ``AdEMAMix`` (optim_bits=32) computes and stores its state in float32 on CPU,
    whatever the parameter's dtype, so the tolerance is float32's: the reference, run in float64
    from the same float32 inputs, agrees to 2e-6 relative after 25 steps (float32's unit roundoff
    is 6e-8); the test allows 1e-5."""
    bnb = pytest.importorskip("bitsandbytes")
    hyper = ademamix.AdEMAMixHyper(
        lr=1e-2, weight_decay=weight_decay, t_alpha=t_alpha, t_beta3=t_beta3
    )
    state_map = {
        "m1": lambda opt, p: opt.state[p]["state1"][0],
        "m2": lambda opt, p: opt.state[p]["state1"][1],
        **_slots(v="state2", step="step"),
    }

    def make(ps):
        return bnb.optim.AdEMAMix(
            ps, lr=1e-2, weight_decay=weight_decay, t_alpha=t_alpha, t_beta3=t_beta3
        )

    _drive(make, ademamix, hyper, state_map, dtype=torch.float32, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("warmup", [None, 12])
def test_ademamix_vs_pytorch_optimizer(foreach, weight_decay, warmup):
    """pytorch_optimizer's one ``t_alpha_beta3`` is both warmups; its decay must be decoupled."""
    po = pytest.importorskip("pytorch_optimizer")
    hyper = ademamix.AdEMAMixHyper(
        lr=1e-2, weight_decay=weight_decay, t_alpha=warmup, t_beta3=warmup
    )
    state_map = {
        **_slots(m1="exp_avg", m2="exp_avg_slow", v="exp_avg_sq"),
        **_group(step="step"),
    }

    def make(ps):
        return po.AdEMAMix(
            ps,
            lr=1e-2,
            weight_decay=weight_decay,
            weight_decouple=True,
            t_alpha_beta3=warmup,
            foreach=foreach,
        )

    _drive(make, ademamix, hyper, state_map)


def test_ademamix_beta3_warmup_is_the_authors_half_life_interpolation():
    """bitsandbytes' closed form vs apple/ml-ademamix's ``linear_hl_warmup_scheduler`` written
    without its ``+1e-8`` inside the log: equal. With it, the half-life of β3 = 0.9999 is 1e-4
    longer (relative) and β3_t up to ~1e-6 higher early in the warmup."""

    def authors(step, beta_end, beta_start, warmup, eps):
        def f(beta):
            return math.log(0.5) / math.log(beta + eps) - 1

        def f_inv(t):
            return math.pow(0.5, 1 / (t + 1))

        if step < warmup:
            a = step / float(warmup)
            return f_inv((1.0 - a) * f(beta_start) + a * f(beta_end))
        return beta_end

    hyper = ademamix.AdEMAMixHyper(t_beta3=100)
    for t in [1, 7, 50, 99, 100, 150]:
        ours = ademamix.beta3_schedule(hyper, t)
        assert ours == pytest.approx(authors(t, 0.9999, 0.9, 100, 0.0), rel=1e-13)
        theirs = authors(t, 0.9999, 0.9, 100, 1e-8)
        assert 0.0 <= theirs - ours < 1e-6
        half_life, their_half_life = (
            math.log(0.5) / math.log(ours),
            math.log(0.5) / math.log(theirs),
        )
        assert their_half_life == pytest.approx(half_life, rel=1.1e-4)


# --- Schedule-Free AdamW ---------------------------------------------------------------------

SF_CONFIGS = [
    dict(weight_decay=0.0, warmup_steps=0, r=0.0, weight_lr_power=2.0),
    dict(weight_decay=0.05, warmup_steps=6, r=0.5, weight_lr_power=1.0),
]
SWITCH_AT = {4, 11, 12}  # to eval and back after these steps (two steps in a row at 11, 12)


def _schedule_free_switches(hyper, params_of):
    def after_step(t, opt, ref_params, ref_states):
        if t not in SWITCH_AT:
            return ref_params, ref_states
        opt.eval()
        pairs = [
            schedule_free.to_eval(p, s, hyper) for p, s in zip(ref_params, ref_states, strict=True)
        ]
        if t == 11:  # a second eval is a no-op on both sides
            opt.eval()
            pairs = [schedule_free.to_eval(x, s, hyper) for x, s in pairs]
        for p, (x, _) in zip(params_of(opt), pairs, strict=True):
            np.testing.assert_allclose(_np(p), x, RTOL, ATOL, err_msg=f"x after step {t + 1}")
        opt.train()
        pairs = [schedule_free.to_train(x, s, hyper) for x, s in pairs]
        return [y for y, _ in pairs], [s for _, s in pairs]

    return after_step


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("config", SF_CONFIGS, ids=["defaults", "decay-warmup-r"])
def test_schedule_free_vs_schedulefree(foreach, config):
    sf = pytest.importorskip("schedulefree")
    hyper = schedule_free.ScheduleFreeHyper(lr=0.05, **config)
    state_map = {
        **_slots(z="z", v="exp_avg_sq"),
        **_group(k="k", lr_max="lr_max", weight_sum="weight_sum", train_mode="train_mode"),
    }

    def make(ps):
        opt = sf.AdamWScheduleFree(ps, lr=0.05, foreach=foreach, **config)
        opt.train()
        return opt

    after = _schedule_free_switches(hyper, lambda opt: opt.param_groups[0]["params"])
    auxes = _drive(make, schedule_free, hyper, state_map, after_step=after)
    assert auxes[0][0].c == 1.0 and 0.0 < auxes[-1][0].c < 0.5


@pytest.mark.parametrize("config", SF_CONFIGS, ids=["defaults", "decay-warmup-r"])
def test_schedule_free_vs_pytorch_optimizer(config):
    po = pytest.importorskip("pytorch_optimizer")
    hyper = schedule_free.ScheduleFreeHyper(lr=0.05, **config)
    state_map = {
        **_slots(z="z", v="exp_avg_sq"),
        **_group(k="step", lr_max="lr_max", weight_sum="weight_sum"),
    }

    def make(ps):
        opt = po.ScheduleFreeAdamW(ps, lr=0.05, foreach=False, **config)
        opt.train()
        return opt

    after = _schedule_free_switches(hyper, lambda opt: opt.param_groups[0]["params"])
    _drive(make, schedule_free, hyper, state_map, after_step=after)


def test_schedule_free_step_needs_train_mode_and_switches_are_inverse():
    hyper = schedule_free.ScheduleFreeHyper(lr=0.1)
    rng = np.random.default_rng(3)
    y, state = rng.standard_normal(7), schedule_free.init(rng.standard_normal(7))
    for _ in range(3):
        y, state, _ = schedule_free.step(y, rng.standard_normal(7), state, hyper)
    x, eval_state = schedule_free.to_eval(y, state, hyper)
    assert schedule_free.to_eval(x, eval_state, hyper)[0] is x  # already in eval mode
    with pytest.raises(ValueError, match="train mode"):
        schedule_free.step(x, np.ones(7), eval_state, hyper)
    np.testing.assert_allclose(schedule_free.to_train(x, eval_state, hyper)[0], y, rtol=1e-13)


# --- ADOPT -----------------------------------------------------------------------------------

ADOPT_DECAYS = [(0.0, False), (0.1, False), (0.1, True)]


def _clipped(auxes) -> bool:
    return any(
        a is not None and a.clip is not None and np.any(np.abs(a.normalized_grad) == a.clip)
        for step in auxes
        for a in step
    )


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(("weight_decay", "decouple"), ADOPT_DECAYS)
def test_adopt_vs_authors(foreach, weight_decay, decouple):
    authors = pytest.importorskip("adopt")  # PyPI: torch-adopt (iShohei220/adopt)
    clip = adopt.default_clip
    if foreach:  # the authors' foreach path calls clip_lambda on the float32 step tensor
        clip = lambda s: float(torch.tensor(float(s), dtype=torch.float32) ** 0.25)  # noqa: E731
    hyper = adopt.ADOPTHyper(
        lr=1e-2, weight_decay=weight_decay, decouple=decouple, clip_lambda=clip
    )

    def make(ps):
        return authors.ADOPT(
            ps, lr=1e-2, weight_decay=weight_decay, decouple=decouple, foreach=foreach
        )

    auxes = _drive(make, adopt, hyper, _slots(step="step", m="exp_avg", v="exp_avg_sq"))
    assert _clipped(auxes)


def test_adopt_maximize_vs_authors():
    authors = pytest.importorskip("adopt")
    hyper = adopt.ADOPTHyper(lr=1e-2, weight_decay=0.1, maximize=True)
    _drive(
        lambda ps: authors.ADOPT(ps, lr=1e-2, weight_decay=0.1, maximize=True, foreach=False),
        adopt,
        hyper,
        _slots(step="step", m="exp_avg", v="exp_avg_sq"),
    )


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("caution", [False, True])
@pytest.mark.parametrize(("weight_decay", "decouple"), ADOPT_DECAYS)
@pytest.mark.parametrize("clip_exp", [0.25, 0.333])
def test_adopt_vs_timm(foreach, caution, weight_decay, decouple, clip_exp):
    """timm clips at (s)**clip_exp with the authors' s; its default clip_exp is 0.333."""
    timm_adopt = _timm("adopt")
    hyper = adopt.ADOPTHyper(
        lr=1e-2,
        weight_decay=weight_decay,
        decouple=decouple,
        cautious=caution,
        clip_lambda=lambda s: s**clip_exp,
    )

    def make(ps):
        return timm_adopt.Adopt(
            ps,
            lr=1e-2,
            weight_decay=weight_decay,
            decoupled=decouple,
            clip_exp=clip_exp,
            caution=caution,
            foreach=foreach,
        )

    _drive(make, adopt, hyper, _slots(step="step", m="exp_avg", v="exp_avg_sq"))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adopt_vs_pytorch_optimizer_one_step_ahead(foreach, weight_decay):
    """pytorch_optimizer's ADOPT (L2 decay) is the authors' with clip_lambda(s + 1)."""
    po = pytest.importorskip("pytorch_optimizer")
    hyper = adopt.ADOPTHyper(
        lr=1e-2, weight_decay=weight_decay, clip_lambda=lambda s: (s + 1) ** 0.25
    )

    def make(ps):
        return po.ADOPT(ps, lr=1e-2, weight_decay=weight_decay, foreach=foreach)

    _drive(make, adopt, hyper, {**_slots(m="exp_avg", v="exp_avg_sq"), **_group(step="step")})


def test_adopt_pytorch_optimizer_decays_on_the_first_call():
    """The authors' first call changes only v; pytorch_optimizer's decoupled decay acts on it."""
    po = pytest.importorskip("pytorch_optimizer")
    phi = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    phi.grad = torch.ones(3, dtype=torch.float64)
    po.ADOPT([phi], lr=0.1, weight_decay=0.5, weight_decouple=True, foreach=False).step()
    ours, _, _ = adopt.step(
        np.ones(3), np.ones(3), adopt.init(np.ones(3)), adopt.ADOPTHyper(0.1, weight_decay=0.5)
    )
    np.testing.assert_array_equal(ours, np.ones(3))
    np.testing.assert_allclose(_np(phi), np.full(3, 0.95), rtol=1e-15)


# --- Lion ------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
@pytest.mark.parametrize("fully_decoupled", [False, True])
def test_lion_vs_lion_pytorch(weight_decay, fully_decoupled):
    lp = pytest.importorskip("lion_pytorch")
    hyper = lion.LionHyper(
        lr=1e-2, weight_decay=weight_decay, max_lr=1e-2 if fully_decoupled else None
    )

    def make(ps):
        return lp.Lion(
            ps, lr=1e-2, weight_decay=weight_decay, decoupled_weight_decay=fully_decoupled
        )

    _drive(make, lion, hyper, _slots(m="exp_avg"))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("caution", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
@pytest.mark.parametrize("maximize", [False, True])
def test_lion_vs_timm(foreach, caution, weight_decay, maximize):
    timm_lion = _timm("lion")
    hyper = lion.LionHyper(lr=1e-2, weight_decay=weight_decay, cautious=caution, maximize=maximize)

    def make(ps):
        return timm_lion.Lion(
            ps,
            lr=1e-2,
            weight_decay=weight_decay,
            caution=caution,
            maximize=maximize,
            foreach=foreach,
        )

    _drive(make, lion, hyper, _slots(m="exp_avg"))


# --- StableAdamW -----------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("decouple_lr", [False, True])
def test_stable_adamw_vs_optimi(foreach, weight_decay, decouple_lr):
    optimi = pytest.importorskip("optimi")
    hyper = stable_adamw.StableAdamWHyper(
        lr=1e-2, weight_decay=weight_decay, decouple_lr=decouple_lr
    )

    def make(ps):
        return optimi.StableAdamW(
            ps,
            lr=1e-2,
            weight_decay=weight_decay,
            decouple_lr=decouple_lr,
            foreach=foreach,
            triton=False,
        )

    state_map = {**_slots(m="exp_avg", v="exp_avg_sq"), **_group(step="step")}
    auxes = _drive(make, stable_adamw, hyper, state_map)
    assert any(a.rms > 1.0 for step in auxes for a in step)  # the clipping acted


# --- cautious --------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_cautious_adamw_vs_timm(foreach, weight_decay, amsgrad):
    timm_adamw = _timm("adamw")
    hyper = ref_adam.AdamHyper(
        lr=1e-2, weight_decay=weight_decay, decoupled=True, amsgrad=amsgrad, cautious=True
    )

    def make(ps):
        return timm_adamw.AdamWLegacy(
            ps, lr=1e-2, weight_decay=weight_decay, amsgrad=amsgrad, caution=True, foreach=foreach
        )

    keys = dict(step="step", m="exp_avg", v="exp_avg_sq")
    if amsgrad:
        keys["v_max"] = "max_exp_avg_sq"
    _drive(make, ref_adam, hyper, _slots(**keys))


def test_cautious_mask_rules():
    u = np.array([1.0, -2.0, 3.0, 0.5, np.nan, 1.0])
    g = np.array([2.0, -1.0, 0.0, -4.0, 1.0, 1e-300])
    expected = np.array([1.0, -2.0, 0.0, 0.0, np.nan, 1.0]) / 0.5  # zero products masked; NaN
    # products too, but 0·NaN stays NaN (as in timm)
    np.testing.assert_array_equal(cautious.apply(u, g), expected)
    all_against = cautious.apply(np.array([1.0, -2.0, 3.0]), np.array([-1.0, 1.0, 0.0]))
    np.testing.assert_array_equal(all_against, np.zeros(3))  # the 1e-3 floor: no 0/0
    assert cautious.apply(np.zeros(0), np.zeros(0)).shape == (0,)


CAUTIOUS_REFERENCES = [
    (ref_adam, ref_adam.AdamHyper(lr=0.1, weight_decay=0.2), "update"),
    (ref_adam, ref_adam.AdamHyper(lr=0.1, weight_decay=0.2, decoupled=True), "update"),
    (ademamix, ademamix.AdEMAMixHyper(lr=0.1, weight_decay=0.2), "update"),
    (adopt, adopt.ADOPTHyper(lr=0.1, weight_decay=0.2), "update"),
    (lion, lion.LionHyper(lr=0.1, weight_decay=0.2), "update"),
]


@pytest.mark.parametrize(("module", "hyper", "field"), CAUTIOUS_REFERENCES)
def test_cautious_flag_masks_the_update_and_not_the_decay(module, hyper, field):
    rng = np.random.default_rng(5)
    param, state = rng.standard_normal(40), module.init(np.zeros(40))
    for _ in range(3):  # some history, so the update and g disagree somewhere
        param, state, _ = module.step(param, rng.standard_normal(40), state, hyper)
    g = rng.standard_normal(40)
    plain_p, _, plain = module.step(param, g, state, hyper)
    caut_p, _, caut = module.step(param, g, state, dataclasses.replace(hyper, cautious=True))
    l2 = {ref_adam: not getattr(hyper, "decoupled", True), adopt: True}.get(module, False)
    g_seen = g + hyper.weight_decay * param if l2 else g  # the mask sees the L2 term
    plain_u = getattr(plain, field)
    np.testing.assert_allclose(getattr(caut, field), cautious.apply(plain_u, g_seen), rtol=1e-14)
    assert 0 < np.count_nonzero(getattr(caut, field)) < 40
    np.testing.assert_allclose(caut_p + getattr(caut, field), plain_p + plain_u, rtol=1e-13)
