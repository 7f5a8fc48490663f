"""Compile adamkit's Triton kernels ahead of time for a CUDA GPU, with no GPU, and count the
PTX instructions that do not round as one IEEE operation each.

CI runs the Triton kernels under TRITON_INTERPRET=1, where every operation is NumPy's: `/` and
`tl.sqrt` are exact there, and multiply-adds are never contracted. Compiled for CUDA, Triton
3.9 makes float32 `/` div.full.f32 (2 ulp), `tl.sqrt` sqrt.approx.ftz.f32, and contracts a*b+c
into fma. adamkit's kernels avoid all three (triton_driver.EXACT, _divide, _sqrt); this script
checks the compiled code, for a cell of every spec in each kernel. One line per cell:
``OK <cell>`` or ``APPROX <cell> <instruction>=<count>...`` or ``FAIL <cell> <error>``.

    python tests/kernels/triton_ptx_cells.py [--arch 90]      (TRITON_INTERPRET unset)
"""

from __future__ import annotations

import argparse
import os
import re

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from adamkit.algorithms import SPECS
from adamkit.algorithms._spec import CAUTIOUS_COUNT, NO_REDUCTION, SPEC_REDUCTION
from adamkit.algorithms.state_formats import BLOCK as LOWBIT_BLOCK
from adamkit.algorithms.state_formats import SLOT_KINDS
from adamkit.kernels import triton_driver, triton_lowbit
from adamkit.kernels._triton_tables import BLOCK as DRIVER_BLOCK

APPROXIMATE = {
    "div.full": r"\bdiv\.full\.", "div.approx": r"\bdiv\.approx\.", "sqrt.approx": r"\bsqrt\.approx\.",
    "rcp.approx": r"\brcp\.approx\.", "rsqrt.approx": r"\brsqrt\.approx\.", "fma": r"\bfma\.",
    "ftz": r"\.ftz\.",
}  # fmt: skip
_NAMES = {tl.float32: "fp32", tl.float64: "fp64", tl.bfloat16: "bf16", tl.float16: "fp16"}


def _lowbit(name, formats, param=0, half=0, mode=NO_REDUCTION, reducing=False):
    spec = SPECS[name]
    element, reduction = triton_lowbit._functions(spec)
    kinds = [triton_lowbit.KINDS[SLOT_KINDS[key]] for key in spec.tensor_state] + [0, 0, 0]
    formats = [*formats, *[triton_lowbit.ABSENT] * 3][:3]
    flags = [True] * 4  # (every branch of the element)
    pointers = dict(block_tensor="*i32", block_index="*i64", numels="*i64", seeds="*i64",
                    rows="*i64", hyper="*fp32", per_tensor="*fp32",
                    partial="*fp64" if reducing else "*i32")  # fmt: skip
    constants = dict(
        ELEMENT=element, REDUCTION=reduction, **{f"F{i}": flags[i] for i in range(4)},
        **{f"FMT{i}": formats[i] for i in range(3)}, **{f"KIND{i}": kinds[i] for i in range(3)},
        PARAM=param, HALF=half, MODE=mode, REDUCING=reducing, B=LOWBIT_BLOCK,
    )  # fmt: skip
    label = f"lowbit {name} formats={formats} param={param}/{half} mode={mode}/{int(reducing)}"
    return label, triton_lowbit._lowbit_kernel, pointers, constants


def _driver(name, p, s, c, mode=NO_REDUCTION, reducing=False, scale=False):
    spec = SPECS[name]
    reduction = triton_driver._no_reduction
    if spec.reduction is not None:
        reduction = triton_driver.compiled(spec.reduction)
    table = "*" + _NAMES[c]
    pointers = dict(block_tensor="*i32", block_start="*i64", numels="*i64", p_addr="*i64",
                    g_addr="*i64", s0_addr="*i64", s1_addr="*i64", s2_addr="*i64", hyper=table,
                    per_tensor=table, grad_scale="*fp32", found_inf="*fp32",
                    partial="*fp64" if reducing else "*fp32")  # fmt: skip
    constants = dict(
        P=p, G=p, S=s, C=c, ELEMENT=triton_driver.compiled(spec.element),
        **{f"F{i}": True for i in range(4)}, **{f"STORE{i}": True for i in range(3)},
        HAS_SCALE=scale, HAS_FOUND_INF=scale, B=DRIVER_BLOCK, REDUCTION=reduction, MODE=mode,
        REDUCING=reducing,
    )  # fmt: skip
    label = f"driver {name} p/state/compute={_NAMES[p]}/{_NAMES[s]}/{_NAMES[c]} mode={mode}"
    return label + f"/{int(reducing)}", triton_driver._spec_kernel, pointers, constants


def cells():
    """A cell of every spec in each kernel, each param storage and format once, and both
    passes of each reduction."""
    q8, bf16, down = triton_lowbit.Q8, triton_lowbit.BF16, triton_lowbit.BF16_DOWN
    f32, f64 = tl.float32, tl.float64
    made = []
    for name, spec in SPECS.items():
        passes = [(NO_REDUCTION, False)]
        if spec.reduction is not None:
            passes = [(SPEC_REDUCTION, True), (SPEC_REDUCTION, False)]
        elif spec.cautious:
            passes += [(CAUTIOUS_COUNT, True), (CAUTIOUS_COUNT, False)]
        slots = len(spec.tensor_state)
        for mode, reducing in passes:
            made.append(_lowbit(name, [q8] * slots, mode=mode, reducing=reducing))
            made.append(_driver(name, f32, f32, f32, mode, reducing))
        made.append(_lowbit(name, [bf16] * slots, param=2, half=1, mode=passes[-1][0]))
        made.append(_driver(name, f64, f64, f64))
    made += [
        _lowbit("adam", [q8, bf16, down], param=3, half=0),
        _lowbit("adam", [q8, q8], param=1, half=1),
        _lowbit("ademamix", [triton_lowbit.FP16_NEAREST] * 3, param=3, half=1),
        _lowbit("adam", [triton_lowbit.FP32, triton_lowbit.BF16_NEAREST], param=2, half=0),
        _driver("adam", tl.bfloat16, f32, f32, scale=True),
        _driver("adam", tl.float16, tl.float16, f32, scale=True),
        (
            "totals of a reduction's partial sums",
            triton_driver._tensor_totals,
            dict(partial="*fp64", first_block="*i64", block_counts="*i64", totals="*fp64"),
            dict(CHUNK=triton_driver._CHUNK),
        ),
    ]
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET"):  # (triton.jit reads it when the kernels are defined)
        parser.error("run without TRITON_INTERPRET: the interpreter's kernels do not compile")
    target = GPUTarget("cuda", args.arch, 32)
    failed = 0
    for label, kernel, pointers, constants in cells():
        signature = {name: pointers.get(name, "constexpr") for name in kernel.arg_names}
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(kernel.arg_names)
                 if n in pointers}  # fmt: skip
        source = ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs)
        try:
            ptx = triton.compile(source, target=target, options=dict(triton_driver.EXACT)).asm[
                "ptx"
            ]
        except Exception as error:
            failed += 1
            print("FAIL", label, str(error).strip().splitlines()[-1][:300])
            continue
        counts = {k: len(re.findall(p, ptx)) for k, p in APPROXIMATE.items()}
        found = " ".join(f"{k}={n}" for k, n in counts.items() if n)
        failed += bool(found)
        print("APPROX" if found else "OK", label, found)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
