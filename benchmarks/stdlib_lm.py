"""A small transformer language model on real text that ships with Python: the bytes of a
fixed list of standard-library modules' sources (nothing is downloaded).

``train(seed, steps, **optimizer_options)`` trains a 2-layer byte-level causal transformer
(0.47M parameters: every weight matrix is over ``min_8bit_size``, so "8bit" quantizes most
of the model) with :class:`adamkit.AdamW` under a warmup + cosine schedule, and returns its
training curve (mean loss per tenth of the run), the mean loss of its last 50 steps and its
loss on held-out text (the last 10% of the corpus).
"""

from __future__ import annotations

import importlib
import inspect
import math

import torch
from torch import nn

import adamkit

MODULES = ("argparse", "textwrap", "json.decoder", "json.encoder", "csv", "string", "shlex")
CONTEXT, BATCH, WIDTH, HEADS, LAYERS = 64, 32, 128, 4, 2


def corpus() -> torch.Tensor:
    """The modules' source bytes, as one int64 tensor of byte values."""
    text = "\n".join(inspect.getsource(importlib.import_module(name)) for name in MODULES)
    return torch.tensor(list(text.encode()), dtype=torch.int64)


class ByteTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, WIDTH)
        self.position = nn.Parameter(torch.randn(CONTEXT, WIDTH) * 0.02)
        layer = nn.TransformerEncoderLayer(
            WIDTH, HEADS, 4 * WIDTH, dropout=0.0, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, 256)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(CONTEXT))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        x = self.layers(x, mask=self.mask[: tokens.shape[1], : tokens.shape[1]], is_causal=True)
        return self.head(self.norm(x))


def _batch(data: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, len(data) - CONTEXT - 1, (BATCH,), generator=gen)
    window = torch.stack([data[s : s + CONTEXT + 1] for s in starts.tolist()])
    return window[:, :-1], window[:, 1:]


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))


def train(
    seed: int, steps: int, lr: float = 2e-3, optimizer=adamkit.AdamW, **options
) -> dict[str, object]:
    """The run's curve, final training loss (last 50 steps) and held-out loss (``optimizer``:
    any of adamkit's classes; Schedule-Free's is evaluated in its eval mode)."""
    data = corpus()
    split = int(len(data) * 0.9)
    train_data, held_out = data[:split], data[split:]
    torch.manual_seed(seed)
    model = ByteTransformer()
    opt = optimizer(model.parameters(), lr=lr, weight_decay=0.01, **options)
    modes = hasattr(opt, "eval") and hasattr(opt, "train")  # (Schedule-Free's y and x)
    if modes:
        opt.train()
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * t / steps))
    )
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x, y = _batch(train_data, gen)
        opt.zero_grad()
        loss = _loss(model, x, y)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
    if modes:
        opt.eval()
    eval_gen = torch.Generator().manual_seed(1234)  # the same held-out windows for every run
    with torch.no_grad():
        held = sum(_loss(model, *_batch(held_out, eval_gen)).item() for _ in range(20)) / 20
    tenth = max(1, steps // 10)
    curve = [
        sum(losses[i : i + tenth]) / len(losses[i : i + tenth]) for i in range(0, steps, tenth)
    ]
    final = losses[-50:]
    return {"curve": curve, "final": sum(final) / len(final), "held_out": held}
