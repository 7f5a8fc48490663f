"""One Triton driver for every algorithm spec: the fused CUDA kernel, written once.

Each spec's ``element`` (see :mod:`adamkit.algorithms._spec`) is recompiled with Triton's
versions of its operations and passed to one generic kernel as a compile-time argument; the
launch layout (block tables, address tables) is :mod:`adamkit.kernels._triton_tables`'. The
per-tensor counters are advanced and the per-tensor scalars computed by the spec's own
``advance``/``tensor_scalars``, recompiled with torch operations and run on all of a group's
counters at once where they live (on the device for ``capturable``/``fused=True``: no host
synchronisation). GradScaler's ``grad_scale`` is divided out inside the kernel; with
``found_inf`` set nothing is written and the counters stay. Arithmetic is float32 for
float32/half parameters (state float32 for half parameters, as for Adam) and float64 for
float64. Under ``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors, which is how CI
tests it.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import linecache
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..algorithms import AlgorithmSpec
from ..algorithms._spec import (
    CAUTIOUS_FLAG,
    MASK_FLOOR,
    NO_REDUCTION,
    SPEC_REDUCTION,
    TENSOR_SLOTS,
    recompiled,
)
from ..algorithms._torch_ops import torch_compiled
from . import _triton_tables as tables
from . import lowbit, spec_kernels, wrappers
from ._tensors import pick, real_view

BLOCK, TL = tables.BLOCK, tables.TL  # elements per program; torch dtype -> Triton dtype
_DIVIDE = "_adamkit_divide"  # the name an element's `/` calls (:func:`_exact_division`)


@triton.jit
def _where(condition, if_true, if_false):
    return tl.where(condition, if_true, if_false)


@triton.jit
def _sqrt(x):
    if x.dtype == tl.float32:  # tl.sqrt is sqrt.approx.ftz.f32 on CUDA
        root = tl.sqrt_rn(x)
    else:
        root = tl.sqrt(x)  # (float64: sqrt.rn.f64)
    return root


@triton.jit
def _divide(a, b):
    quotient = a / b
    if quotient.dtype == tl.float32:  # `/` is div.full.f32 on CUDA (2 ulp)
        quotient = tl.div_rn(a, b)
    return quotient


@triton.jit
def _absolute(x):
    return tl.abs(x)


@triton.jit
def _nan_max(a, b):
    return tl.where((a != a) | (a > b), a, b)  # NaN from either side, as torch.maximum


@triton.jit
def _lerp(start, end, weight, one_minus_weight):
    diff = end - start
    return tl.where(weight < 0.5, start + weight * diff, end - diff * one_minus_weight)


@triton.jit
def _sign(x):
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0)).to(x.dtype)  # 0 for NaN, as torch


OPS = {
    "where": _where, "sqrt": _sqrt, "absolute": _absolute, "nan_max": _nan_max, "lerp": _lerp,
    "sign": _sign, _DIVIDE: _divide,
}  # fmt: skip
# Launch option of every adamkit Triton kernel: no multiply-add contraction, so each operation
# rounds once, as on the CPU kernels and the NumPy reference (Triton 3.9 contracts by default).
EXACT = {"enable_fp_fusion": False}


def compiled(function: Callable[..., Any]) -> Any:
    """``function`` as a Triton function, with Triton's operations in place of
    :mod:`adamkit.algorithms._ops`' and each ``/`` correctly rounded (:func:`_divide`)."""
    # No helpers: Triton resolves what an element calls at compile time, and the elements
    # call only these operations. The interpreter patches tl, so it must be visible.
    return triton.jit(_exact_division(recompiled(function, {**OPS, "tl": tl})))


def _exact_division(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` rebuilt with each ``a / b`` (and ``a /= b``) as ``_divide(a, b)``, on its
    own namespace; a division of two number literals stays (Triton folds it). The source goes
    to linecache under a name of its own, one per rebuild: Triton (compiled and interpreted)
    reads a function's source, not its code, the interpreter only at the first call. A function
    without source (made by exec, typed at a prompt) is returned as it is: the interpreter runs
    it, and compiled Triton could not have (it needs the source)."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return function
    tree = ast.parse(source)
    definition = tree.body[0]
    assert isinstance(definition, ast.FunctionDef)
    definition.decorator_list = []
    tree = ast.fix_missing_locations(_Divisions().visit(tree))
    source = ast.unparse(tree) + "\n"
    filename = f"<adamkit.triton {function.__module__}.{function.__qualname__} {next(_REBUILDS)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = function.__globals__  # (recompiled's own copy)
    exec(compile(source, filename, "exec"), namespace)
    return namespace[definition.name]


_REBUILDS = itertools.count()


class _Divisions(ast.NodeTransformer):
    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.op, ast.Div) or _literals(node.left, node.right):
            return node
        call = ast.Call(ast.Name(_DIVIDE, ast.Load()), [node.left, node.right], [])
        return ast.copy_location(call, node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.op, ast.Div) or not isinstance(node.target, ast.Name):
            return node
        read = ast.Name(node.target.id, ast.Load())
        call = ast.Call(ast.Name(_DIVIDE, ast.Load()), [read, node.value], [])
        return ast.copy_location(ast.Assign([node.target], call), node)


def _literals(*nodes: ast.AST) -> bool:
    return all(isinstance(n, ast.Constant) and isinstance(n.value, int | float) for n in nodes)


@triton.jit
def _no_reduction(g, s0, s1, s2, h, k, f):
    return g


@triton.jit
def _spec_kernel(
    block_tensor, block_start, numels, p_addr, g_addr, s0_addr, s1_addr, s2_addr, hyper,
    per_tensor, grad_scale, found_inf, partial,
    P: tl.constexpr, G: tl.constexpr, S: tl.constexpr, C: tl.constexpr,
    ELEMENT: tl.constexpr, F0: tl.constexpr, F1: tl.constexpr, F2: tl.constexpr,
    F3: tl.constexpr, STORE0: tl.constexpr, STORE1: tl.constexpr, STORE2: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, B: tl.constexpr,
    REDUCTION: tl.constexpr, MODE: tl.constexpr, REDUCING: tl.constexpr,
):  # fmt: skip
    """One block's update; or, with ``REDUCING``, its share of the pass before the update
    (``MODE``: the spec's reduction or the cautious mask's count), summed into
    ``partial[block]`` with nothing stored."""
    pid = tl.program_id(0)
    t = tl.load(block_tensor + pid)
    offs = tl.load(block_start + pid) + tl.arange(0, B)
    n = tl.load(numels + t)
    if HAS_FOUND_INF:  # GradScaler found an Inf: mask every element off
        n = tl.where(tl.load(found_inf) == 0, n, 0)
    mask = offs < n
    h = (
        tl.load(hyper + 0).to(C), tl.load(hyper + 1).to(C), tl.load(hyper + 2).to(C),
        tl.load(hyper + 3).to(C), tl.load(hyper + 4).to(C), tl.load(hyper + 5).to(C),
        tl.load(hyper + 6).to(C), tl.load(hyper + 7).to(C),
    )  # fmt: skip
    k = (
        tl.load(per_tensor + 6 * t).to(C), tl.load(per_tensor + 6 * t + 1).to(C),
        tl.load(per_tensor + 6 * t + 2).to(C), tl.load(per_tensor + 6 * t + 3).to(C),
        tl.load(per_tensor + 6 * t + 4).to(C), tl.load(per_tensor + 6 * t + 5).to(C),
    )  # fmt: skip
    p_ptr = tl.load(p_addr + t).to(tl.pointer_type(P))
    s0_ptr = tl.load(s0_addr + t).to(tl.pointer_type(S))
    s1_ptr = tl.load(s1_addr + t).to(tl.pointer_type(S))
    s2_ptr = tl.load(s2_addr + t).to(tl.pointer_type(S))
    p = tl.load(p_ptr + offs, mask=mask).to(C)
    g = tl.load(tl.load(g_addr + t).to(tl.pointer_type(G)) + offs, mask=mask).to(C)
    if HAS_SCALE:  # GradScaler's gradients are still scaled
        g = _divide(g, tl.load(grad_scale).to(C))
    s0 = tl.load(s0_ptr + offs, mask=mask).to(C)
    s1 = tl.load(s1_ptr + offs, mask=mask).to(C)
    s2 = tl.load(s2_ptr + offs, mask=mask).to(C)
    f = (F0, F1, F2, F3)
    p, s0, s1, s2, base, u, g_seen = ELEMENT(p, g, s0, s1, s2, h, k, f)
    if REDUCING:
        if MODE == 1:  # the spec's reduction
            term = REDUCTION(g_seen, s0, s1, s2, h, k, f).to(tl.float64)
        else:  # the cautious mask
            term = tl.where(u * g_seen > 0, 1.0, 0.0).to(tl.float64)
        tl.store(partial + pid, tl.sum(tl.where(mask, term, 0.0), axis=0))
    else:
        if MODE == 2:  # cautious: k[4] = 1/max(mean(mask), floor), k[5] = 0
            p = base - u * tl.where(u * g_seen > 0, k[4], k[5])
        if STORE0:
            tl.store(s0_ptr + offs, s0.to(S), mask=mask)
        if STORE1:
            tl.store(s1_ptr + offs, s1.to(S), mask=mask)
        if STORE2:
            tl.store(s2_ptr + offs, s2.to(S), mask=mask)
        tl.store(p_ptr + offs, p.to(P), mask=mask)


def _advance_counters(
    spec_functions, steps: list[Tensor], aux: list[Tensor], bias, found_inf: Tensor | None,
    counted: bool = True,
) -> Tensor:  # fmt: skip
    """Advance the counters of a group's tensors (the spec's ``advance``; not where GradScaler
    found an Inf, nor for a spec that does not count its steps, whose markers are only read)
    and return their per-tensor scalars (``tensor_scalars``, then a reduction's two columns as
    zeros) as an (n, 6) float64 tensor on the counters' device."""
    advance, tensor_scalars = spec_functions
    step = torch.stack([s.reshape(()) for s in steps]).to(torch.float64)
    scalar = torch.stack([a.reshape(()) for a in aux]).to(torch.float64) if aux else None
    if not counted:
        values = (*tensor_scalars(step, torch.zeros_like(step), bias), 0.0, 0.0)
        return torch.stack(
            [torch.as_tensor(v, dtype=torch.float64).expand(len(steps)) for v in values], dim=1
        )
    new_step, new_scalar = advance(step, scalar if aux else torch.zeros_like(step), bias)
    if found_inf is not None:
        skip = found_inf.to(step.device) != 0
        new_step = torch.where(skip, step, new_step)
        new_scalar = torch.where(skip, scalar, new_scalar) if aux else new_scalar
    torch._foreach_copy_(list(steps), [v.to(s.dtype) for v, s in zip(new_step, steps, strict=True)])
    if aux:
        new_scalar = torch.as_tensor(new_scalar)
        torch._foreach_copy_(
            list(aux), [v.to(a.dtype) for v, a in zip(new_scalar, aux, strict=True)]
        )
        scalar = torch.stack([a.reshape(()) for a in aux]).to(torch.float64)
    values = (*tensor_scalars(new_step, scalar if aux else torch.zeros_like(step), bias), 0.0, 0.0)
    n = len(steps)
    return torch.stack(
        [torch.as_tensor(v, dtype=torch.float64, device=step.device).expand(n) for v in values],
        dim=1,
    )


def kernel(spec: AlgorithmSpec) -> Callable[..., None]:
    """The spec's Triton kernel, with the signature of :mod:`adamkit.kernels.spec_kernels`."""
    element = compiled(spec.element)
    reduction = _no_reduction if spec.reduction is None else compiled(spec.reduction)
    counters = (torch_compiled(spec.advance), torch_compiled(spec.tensor_scalars))
    slots = len(spec.tensor_state)
    for_loop = wrappers.half_in_float32(spec_kernels.torch_order(spec, foreach=False))

    def run(
        params: Sequence[Tensor], grads: Sequence[Tensor], *lists: Any, group: dict[str, Any],
        grad_scale: Tensor | None = None,
        found_inf: Tensor | None = None,
    ) -> None:  # fmt: skip
        if len({id(p) for p in params}) != len(params):  # one step after the other, as torch
            for idx in lowbit._rounds(params):
                run(
                    pick(params, idx), pick(grads, idx),
                    *(pick(t, idx) if len(t) else [] for t in lists),
                    group=group, grad_scale=grad_scale, found_inf=found_inf,
                )  # fmt: skip
            return
        *states, steps, aux = lists
        grads = tables.readable(grads)
        used = [s for s in states if len(s) or not params]  # unused slots: empty lists
        groups, other = tables.groups(params, grads, *used)
        empty = [i for i, p in enumerate(params) if p.numel() == 0]
        rest = sorted(other + empty)  # empty tensors only count their steps
        if rest:
            if grad_scale is not None or found_inf is not None:
                raise ValueError(
                    "grad_scale/found_inf need contiguous float tensors on one device; "
                    "got a tensor the Triton kernels cannot take"
                )
            lists = (params, grads, *states, steps, aux)
            for_loop(*[pick(t, rest) if len(t) else [] for t in lists], group=group)
        for idx in groups:
            p0 = params[idx[0]]
            grad_views = [real_view(t) for t in pick(grads, idx)]
            # an unused slot (and one past the spec's last) reads the grads and is not stored
            roles = [[real_view(t) for t in pick(params, idx)], grad_views] + [
                [real_view(t) for t in pick(s, idx)] if len(s) else grad_views for s in states
            ]
            roles += [grad_views] * (TENSOR_SLOTS + 2 - len(roles))
            c = tables.compute_dtype(real_view(p0).dtype)
            scalars = _group_scalars(spec, group, c)
            stores = [i < slots and len(states[i]) > 0 for i in range(TENSOR_SLOTS)]
            per_tensor = _advance_counters(
                counters, pick(steps, idx), pick(aux, idx), scalars.bias, found_inf, spec.counted
            )
            plan = tables.plan(roles, p0.device)
            hyper = tables.scalars(scalars.hyper, p0.device, c)
            dummy = tables.scalars((0.0,), p0.device, torch.float32)
            mode = spec.reduction_mode(scalars.flags[CAUTIOUS_FLAG])

            constants = dict(
                P=TL[roles[0][0].dtype], G=TL[roles[1][0].dtype], S=TL[roles[2][0].dtype],
                C=TL[c], ELEMENT=element, F0=scalars.flags[0], F1=scalars.flags[1],
                F2=scalars.flags[2], F3=scalars.flags[3], STORE0=stores[0], STORE1=stores[1],
                STORE2=stores[2], HAS_SCALE=grad_scale is not None,
                HAS_FOUND_INF=found_inf is not None, B=BLOCK, REDUCTION=reduction, MODE=mode,
            )  # fmt: skip
            tensors = (
                plan.block_tensor, plan.block_start, plan.numels, *plan.addresses, hyper,
            )  # fmt: skip
            amp = (
                dummy if grad_scale is None else grad_scale,
                dummy if found_inf is None else found_inf,
            )
            if mode != NO_REDUCTION:  # the pass before the update: a partial sum per block
                partial = torch.zeros(plan.n_blocks, dtype=torch.float64, device=p0.device)
                table = per_tensor.to(device=p0.device, dtype=c).contiguous()
                _spec_kernel[(plan.n_blocks,)](
                    *tensors, table, *amp, partial, **constants, REDUCING=True, **EXACT
                )
                per_tensor = _finished(per_tensor, partial, plan.numels, BLOCK, mode)
            table = per_tensor.to(device=p0.device, dtype=c).contiguous()
            _spec_kernel[(plan.n_blocks,)](
                *tensors, table, *amp, dummy, **constants, REDUCING=False, **EXACT
            )

    run.__name__ = f"{spec.name}_triton"
    return run


def _finished(per_tensor: Tensor, partial: Tensor, numels: Tensor, block: int, mode: int) -> Tensor:
    """The per-tensor table with a reduction's columns, from each block's partial sum (the
    blocks of ``block`` elements of tensors of ``numels``, in order): the sum and count for
    the spec's element, or the cautious scale and a 0 (as ``_numba_reduce._finish``),
    computed where the tensors live (no host synchronisation), in a fixed order."""
    counts = numels.to(torch.float64)
    block_counts = (numels + (block - 1)) // block
    first_block = torch.cumsum(block_counts, 0) - block_counts
    totals = torch.empty(len(numels), dtype=torch.float64, device=partial.device)
    # (not index_add_: its atomics on CUDA add in another order each run)
    _tensor_totals[(len(numels),)](
        partial, first_block, block_counts, totals, CHUNK=_CHUNK, **EXACT
    )
    per_tensor = per_tensor.to(partial.device).clone()
    if mode == SPEC_REDUCTION:
        per_tensor[:, 4], per_tensor[:, 5] = totals, counts
    else:
        mean = totals / counts.clamp(min=1)
        per_tensor[:, 4] = torch.where(counts > 0, 1.0 / mean.clamp(min=MASK_FLOOR), 1.0)
        per_tensor[:, 5] = 0.0
    return per_tensor


_CHUNK = 256  # blocks a program adds at once


@triton.jit
def _tensor_totals(partial, first_block, block_counts, totals, CHUNK: tl.constexpr):
    """``totals[t]``: the sum of tensor t's blocks' partial sums, in the same order each run."""
    t = tl.program_id(0)
    first = tl.load(first_block + t)
    count = tl.load(block_counts + t)
    lanes = tl.zeros((CHUNK,), dtype=tl.float64)
    for start in range(0, count, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        lanes += tl.load(partial + first + offs, mask=offs < count, other=0.0)
    tl.store(totals + t, tl.sum(lanes, axis=0))


def _group_scalars(spec: AlgorithmSpec, group: dict[str, Any], dtype: torch.dtype):
    return spec_kernels.padded_scalars(spec.name, dtype, spec_kernels.hyper_key(spec, group))
