"""Lightning with adamkit.Adam against torch.optim.Adam: same seed, losses step by step, with a
scheduler, gradient accumulation and clipping; a checkpoint resumes exactly."""

from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch

lightning = pytest.importorskip("lightning")

import adamkit  # noqa: E402
from adamkit.integrations.lightning import RecorderCallback  # noqa: E402


class _Regression(lightning.LightningModule):
    def __init__(self, optimizer_cls) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)
        )
        self.optimizer_cls = optimizer_cls
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        opt = self.optimizer_cls(self.parameters(), lr=1e-2, weight_decay=0.01)
        scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _loader():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(48, 8, generator=gen)  # 6 batches: 3 optimizer steps an epoch
    y = x.sum(dim=1, keepdim=True).sin()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def _fit(optimizer_cls, root, *, max_steps=6, callbacks=(), ckpt_path=None, module=None):
    module = module or _Regression(optimizer_cls)
    trainer = lightning.Trainer(
        default_root_dir=str(root),
        max_steps=max_steps,
        accumulate_grad_batches=2,
        gradient_clip_val=0.5,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.fit(module, _loader(), ckpt_path=ckpt_path)
    return trainer, module


def test_losses_match_torch_adam_step_by_step(tmp_path):
    with warnings.catch_warnings(record=True) as torch_warnings:
        warnings.simplefilter("always")
        _, theirs = _fit(torch.optim.Adam, tmp_path / "torch")
    with warnings.catch_warnings(record=True) as our_warnings:
        warnings.simplefilter("always")
        _, ours = _fit(adamkit.Adam, tmp_path / "adamkit")
    assert len(ours.losses) == 12  # 6 optimizer steps, 2 batches each
    torch.testing.assert_close(ours.losses, theirs.losses, rtol=1e-5, atol=1e-7)
    assert {str(w.message) for w in our_warnings} <= {str(w.message) for w in torch_warnings}


def test_checkpoint_resumes_exactly(tmp_path):
    saver = lightning.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1, filename="{step}"
    )
    _, straight = _fit(adamkit.Adam, tmp_path / "straight", callbacks=[saver])
    checkpoint = tmp_path / "ckpt" / "step=3.ckpt"
    assert checkpoint.exists()
    _, resumed = _fit(adamkit.Adam, tmp_path / "resumed", ckpt_path=str(checkpoint))
    # Steps 4-6 again, from the optimizer, scheduler and model state saved at step 3.
    assert len(resumed.losses) == 6, resumed.losses  # 3 steps, 2 batches each
    tail = straight.losses[-len(resumed.losses) :]
    torch.testing.assert_close(resumed.losses, tail, rtol=1e-6, atol=1e-8)


VARIANTS = {
    "AdEMAMix": adamkit.AdEMAMix,
    "Lion": adamkit.Lion,
    "StableAdamW": adamkit.StableAdamW,
    "ADOPT": adamkit.ADOPT,
    "Adafactor": adamkit.Adafactor,
    "AdamW bf16 state": functools.partial(adamkit.AdamW, state_precision="bf16"),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_resumes_from_a_lightning_checkpoint_exactly(tmp_path, name):
    # with the accumulation, clipping and scheduler of the tests above
    saver = lightning.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1, filename="{step}"
    )
    _, straight = _fit(VARIANTS[name], tmp_path / "straight", callbacks=[saver])
    assert all(math.isfinite(loss) for loss in straight.losses)
    _, resumed = _fit(
        VARIANTS[name], tmp_path / "resumed", ckpt_path=str(tmp_path / "ckpt" / "step=3.ckpt")
    )
    assert len(resumed.losses) == 6, resumed.losses
    assert resumed.losses == straight.losses[-6:]  # bitwise
    for a, b in zip(resumed.parameters(), straight.parameters(), strict=True):
        assert torch.equal(a, b)


def test_recorder_callback_records_the_modules_optimizer(tmp_path):
    callback = RecorderCallback(every=3)
    _fit(adamkit.Adam, tmp_path / "rec", callbacks=[callback])
    steps = [row["step"] for row in callback.recorder.rows]
    assert steps == [3, 6]
