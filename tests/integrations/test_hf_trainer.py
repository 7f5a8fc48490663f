"""Hugging Face transformers.Trainer with adamkit.AdamW against torch.optim.AdamW: same seed,
same tiny randomly initialised GPT-2, losses step by step; a checkpoint resumes exactly."""

from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

import adamkit  # noqa: E402
from adamkit.integrations.hf import RecorderCallback  # noqa: E402

STEPS = 6


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 64, length: int = 16, vocab: int = 97) -> None:
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (n, length), generator=gen)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _trainer(optimizer_cls, out, *, callbacks=(), resume_steps=STEPS):
    transformers.set_seed(0)
    config = transformers.GPT2Config(vocab_size=97, n_positions=16, n_embd=32, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    opt = optimizer_cls(model.parameters(), lr=3e-3, weight_decay=0.01)
    scheduler = transformers.get_scheduler(
        "cosine", opt, num_warmup_steps=2, num_training_steps=STEPS
    )
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=resume_steps,
        per_device_train_batch_size=8,
        logging_steps=1,
        save_steps=3,
        save_strategy="steps",
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return transformers.Trainer(
        model=model,
        args=args,
        train_dataset=_Tokens(),
        optimizers=(opt, scheduler),
        callbacks=list(callbacks),
    )


def _losses(trainer) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}


def test_trainer_losses_match_torch_adamw_step_by_step(tmp_path):
    theirs = _trainer(torch.optim.AdamW, tmp_path / "torch")
    with warnings.catch_warnings(record=True) as torch_warnings:
        warnings.simplefilter("always")
        theirs.train()
    ours = _trainer(adamkit.AdamW, tmp_path / "adamkit")
    with warnings.catch_warnings(record=True) as our_warnings:
        warnings.simplefilter("always")
        ours.train()
    a, b = _losses(ours), _losses(theirs)
    assert sorted(a) == list(range(1, STEPS + 1))
    assert a.keys() == b.keys()
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5), step
    # Nothing warns that torch.optim would not.
    assert {str(w.message) for w in our_warnings} <= {str(w.message) for w in torch_warnings}


def test_trainer_resumes_from_its_checkpoint_exactly(tmp_path):
    straight = _trainer(adamkit.AdamW, tmp_path / "run")
    straight.train()
    checkpoint = tmp_path / "run" / "checkpoint-3"
    assert (checkpoint / "optimizer.pt").exists()
    resumed = _trainer(adamkit.AdamW, tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    a, b = _losses(straight), _losses(resumed)
    for step in range(4, STEPS + 1):
        assert b[step] == pytest.approx(a[step], rel=1e-6), step
    # torch.optim.AdamW loads adamkit's optimizer.pt, and the reverse.
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=97, n_positions=16, n_embd=32, n_layer=2, n_head=2)
    )
    torch.optim.AdamW(model.parameters()).load_state_dict(state)


# What the Trainer's optim= names give (ademamix, lion, stable_adamw), ADOPT, Adafactor, and
# 8-bit state: each saved by the Trainer in its checkpoint and resumed from it.
VARIANTS = {
    "AdEMAMix": adamkit.AdEMAMix,
    "Lion": adamkit.Lion,
    "StableAdamW": adamkit.StableAdamW,
    "ADOPT": adamkit.ADOPT,
    "Adafactor": adamkit.Adafactor,
    "AdamW 8-bit state": functools.partial(adamkit.AdamW, state_precision="8bit", min_8bit_size=0),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_resumes_from_the_trainers_checkpoint_exactly(tmp_path, name):
    straight = _trainer(VARIANTS[name], tmp_path / "run")
    straight.train()
    checkpoint = tmp_path / "run" / "checkpoint-3"
    resumed = _trainer(VARIANTS[name], tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    a, b = _losses(straight), _losses(resumed)
    assert sorted(a) == list(range(1, STEPS + 1))
    assert all(math.isfinite(loss) for loss in a.values())
    assert a[STEPS] < a[1]  # it trains
    for step in range(4, STEPS + 1):
        assert b[step] == a[step], step  # the same numbers: a bitwise resume
    straight_params = dict(straight.model.named_parameters())
    for key, value in resumed.model.named_parameters():
        assert torch.equal(value, straight_params[key]), key


def test_recorder_callback_records_the_trainers_optimizer(tmp_path):
    callback = RecorderCallback(every=2)
    trainer = _trainer(adamkit.AdamW, tmp_path / "rec", callbacks=[callback])
    trainer.train()
    rows = callback.recorder.rows
    assert [row["step"] for row in rows if row["label"] == "group0"] == [2, 4, 6]
    assert all(row["effective_lr.median"] > 0 for row in rows)


def test_schedule_free_in_trainer_matches_schedulefree_with_evaluation(tmp_path):
    # Trainer calls optimizer.train() when training starts and optimizer.eval() in evaluate():
    # adamkit's ScheduleFreeAdamW needs nothing else, and gives schedulefree's losses (train
    # and eval) step by step.
    schedulefree = pytest.importorskip("schedulefree")
    results = {}
    for name, cls in (
        ("adamkit", adamkit.ScheduleFreeAdamW),
        ("sf", schedulefree.AdamWScheduleFree),
    ):
        transformers.set_seed(0)
        config = transformers.GPT2Config(
            vocab_size=97, n_positions=16, n_embd=32, n_layer=2, n_head=2
        )
        model = transformers.GPT2LMHeadModel(config)
        opt = cls(model.parameters(), lr=3e-3, warmup_steps=2)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)  # constant
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / name), max_steps=STEPS, per_device_train_batch_size=8,
            logging_steps=1, eval_strategy="steps", eval_steps=3, save_strategy="no",
            report_to=[], use_cpu=True, seed=0, data_seed=0, dataloader_num_workers=0,
            disable_tqdm=True,
        )  # fmt: skip
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=_Tokens(), eval_dataset=_Tokens(16),
            optimizers=(opt, scheduler),
        )  # fmt: skip
        trainer.train()
        history = trainer.state.log_history
        results[name] = (
            _losses(trainer),
            {e["step"]: e["eval_loss"] for e in history if "eval_loss" in e},
        )
    (ours, our_eval), (theirs, their_eval) = results["adamkit"], results["sf"]
    assert sorted(ours) == list(range(1, STEPS + 1)) and sorted(our_eval) == [3, 6]
    for mine, peer in ((ours, theirs), (our_eval, their_eval)):
        assert mine.keys() == peer.keys()
        for step in mine:
            assert mine[step] == pytest.approx(peer[step], rel=1e-5), step
