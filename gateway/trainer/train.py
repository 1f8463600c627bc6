"""One LoRA training run with PyTorch and PEFT: epochs of shuffled mini-batches, loss on assistant turns only.

Pure compute: no database, no HTTP. The worker passes hooks for progress, checkpoints and cancellation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.files.validation import Messages

IGNORE = -100
BASE_LR = 1e-3  # × learning_rate_multiplier


@dataclass(frozen=True)
class Plan:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    lora_rank: int
    lora_alpha: int
    target_modules: list[str]
    seed: int = 0


@dataclass
class Hooks:
    """Called from the training thread. `cancelled` is polled between steps."""

    on_step: Callable[[int, int, float, int], None] = lambda step, epoch, loss, tokens: None
    on_epoch: Callable[[int, int, float, int, Path, float | None], None] = (
        lambda epoch, step, loss, tokens, path, valid_loss: None
    )
    cancelled: Callable[[], bool] = lambda: False


@dataclass
class Outcome:
    epochs_done: int
    steps: int
    trained_tokens: int
    cancelled: bool = False
    losses: list[float] = field(default_factory=list)


def encode(tok: Any, messages: Messages) -> tuple[list[int], list[int]]:
    """Token ids of a conversation through the chat template and its labels (loss on assistant replies).

    Each message's piece is what the template adds for it, so the pieces join to the whole rendering."""
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            head = tok.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=False) if i else ""
            head_ids = tok(head[len(rendered) :], add_special_tokens=False)["input_ids"]
            ids += head_ids
            labels += [IGNORE] * len(head_ids)
            rendered = head
        full = tok.apply_chat_template(messages[: i + 1], tokenize=False)
        piece = tok(full[len(rendered) :], add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if message["role"] == "assistant" else [IGNORE] * len(piece)
        rendered = full
    return ids, labels


def _batches(
    rows: list[tuple[list[int], list[int]]], counts: list[int], size: int, rng: random.Random, pad: int
) -> list[Any]:
    import torch

    order = list(range(len(rows)))
    rng.shuffle(order)
    out = []
    for start in range(0, len(order), size):
        chunk = [rows[i] for i in order[start : start + size]]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, (row_ids, row_labels) in enumerate(chunk):
            ids[j, : len(row_ids)] = torch.tensor(row_ids)
            labels[j, : len(row_labels)] = torch.tensor(row_labels)
            mask[j, : len(row_ids)] = 1
        out.append((ids, labels, mask, sum(counts[i] for i in order[start : start + size])))
    return out


def _mean_loss(model: Any, rows: list[tuple[list[int], list[int]]], size: int, pad: int, device: str) -> float:
    """The loss over a validation set, weighted by batch (no gradients; the model goes back to training)."""
    import torch

    model.eval()
    losses = []
    with torch.no_grad():
        for ids, labels, mask, _ in _batches(rows, [0] * len(rows), size, random.Random(0), pad):
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
            losses.append(float(out.loss))
    model.train()
    return sum(losses) / len(losses)


def train(
    model_dir: Path,
    examples: list[Messages],
    plan: Plan,
    out_dir: Path,
    *,
    device: str = "cpu",
    resume: Path | None = None,
    start_epoch: int = 0,
    hooks: Hooks | None = None,
    example_tokens: list[int] | None = None,
    validation: list[Messages] | None = None,
) -> Outcome:
    """Train epochs start_epoch+1 … n_epochs (from the checkpoint `resume` if given); each epoch's adapter is
    saved under out_dir/epoch-N (a PEFT folder) and handed to hooks.on_epoch. Trained tokens are counted with
    `example_tokens` (the billing count of each example; default: its encoded length)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hooks = hooks or Hooks()
    torch.manual_seed(plan.seed)
    rng = random.Random(plan.seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if resume is not None:
        model = PeftModel.from_pretrained(model, resume, is_trainable=True)
    else:
        config = LoraConfig(
            r=plan.lora_rank,
            lora_alpha=plan.lora_alpha,
            target_modules=plan.target_modules,
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    model.to(device)
    rows = [encode(tok, m) for m in examples]
    valid_rows = [encode(tok, m) for m in validation or []]
    counts = example_tokens or [len(ids) for ids, _ in rows]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=BASE_LR * plan.learning_rate_multiplier, weight_decay=0.0)
    model.train()
    outcome = Outcome(epochs_done=start_epoch, steps=0, trained_tokens=0)
    for _ in range(start_epoch):  # the same shuffles as an uninterrupted run
        rng.shuffle(list(range(len(rows))))
    for epoch in range(start_epoch + 1, plan.n_epochs + 1):
        loss_value = 0.0
        for ids, labels, mask, tokens in _batches(rows, counts, plan.batch_size, rng, pad):
            if hooks.cancelled():
                outcome.cancelled = True
                return outcome
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            outcome.steps += 1
            outcome.trained_tokens += tokens
            loss_value = float(loss.detach())
            outcome.losses.append(loss_value)
            hooks.on_step(outcome.steps, epoch, loss_value, outcome.trained_tokens)
        path = out_dir / f"epoch-{epoch}"
        model.save_pretrained(path, safe_serialization=True)
        outcome.epochs_done = epoch
        valid_loss = _mean_loss(model, valid_rows, plan.batch_size, pad, device) if valid_rows else None
        hooks.on_epoch(epoch, outcome.steps, loss_value, outcome.trained_tokens, path, valid_loss)
    return outcome
