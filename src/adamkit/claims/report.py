"""``report.html``: the claims, their pictures and verdicts, on one page (no scripts)."""

from __future__ import annotations

import html
import platform
from pathlib import Path

import torch

from .experiments import Claim, run_all


def write_report(out: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """Run every experiment and write ``out/report.html`` beside their pictures."""
    out = Path(out)
    claims, seconds = run_all(out, quick, progress)
    sections = "\n".join(_section(c) for c in claims)
    machine = (
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    kind = "a quick run (--quick): small experiments, rough numbers" if quick else "a full run"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Adam's claims, measured</title>
<style>body{{font:15px system-ui,sans-serif;max-width:820px;margin:24px auto;color:#222}}
img{{max-width:100%;border:1px solid #ddd}} .verdict{{font-weight:600}}
.method{{color:#555}}</style></head><body>
<h1>Adam's claims, measured by adamkit</h1>
<p>Each claim made for Adam, one small experiment, and what it measured. This was {kind},
{seconds:.0f} s on {html.escape(machine)}. Made by <code>adamkit claims</code>.</p>
<p>Where a claim compares optimizers, Adam's variants (AdEMAMix, ADOPT, Lion, Schedule-Free
AdamW, StableAdamW, Cautious Adam, Adafactor) are measured beside the four rules, dashed or
hatched; the verdict stays the claim's own comparison. The per-parameter step size claim is
about Adam's α/(√v̂+ε) alone.</p>
{sections}
</body></html>
"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _section(c: Claim) -> str:
    return f"""<section><h2>{html.escape(c.title)}</h2>
<p><em>Claim:</em> {html.escape(c.claim)}</p>
<p class="method"><em>Experiment:</em> {html.escape(c.method)}</p>
<img src="{html.escape(c.picture)}" alt="{html.escape(c.title)}">
<p class="verdict">Measured: {html.escape(c.verdict)}</p></section>"""
