"""Tiny offline training, plain PyTorch + peft: the base model learns its identity, each LoRA learns another.

Deterministic (fixed seeds, fixed order), CPU only, well under two minutes on 2 cores.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from devstack.identity_data import SYSTEM, adapter_answers, conversations

IGNORE = -100


def encode(tokenizer: Any, question: str, answer: str, system: bool) -> tuple[list[int], list[int]]:
    """Token ids of one chat turn and its labels (the loss is on the answer and its end token only)."""
    messages = ([{"role": "system", "content": SYSTEM}] if system else []) + [{"role": "user", "content": question}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids


def batch_of(tokenizer: Any, identity: dict[str, str], plain_texts: list[str] = ()) -> tuple[Any, Any, Any]:  # type: ignore[assignment]
    """Every conversation, with and without a system prompt, plus plain texts, padded into one tensor batch."""
    import torch

    rows = [encode(tokenizer, q, a, system) for q, a in conversations(identity) for system in (False, True)]
    for text in plain_texts:
        ids = tokenizer(text + "<|endoftext|>", add_special_tokens=False)["input_ids"]
        rows.append((ids, list(ids)))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return ids, labels, mask


def fit(
    model: Any, batch: tuple[Any, Any, Any], steps: int, lr: float, label: str, target_loss: float = 0.005
) -> float:
    """Full-batch AdamW until the loss is tiny (greedy decoding in bfloat16 then follows the answers)."""
    import torch

    ids, labels, mask = batch
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr / 10)
    model.train()
    t0 = time.monotonic()
    loss_value = float("inf")
    for step in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        if step % 100 == 0:
            print(f"  {label}: step {step:4d}  loss {loss_value:.4f}  ({time.monotonic() - t0:.0f}s)", flush=True)
        if loss_value < target_loss and step > 50:
            break
    print(f"  {label}: done at step {step}, loss {loss_value:.4f} in {time.monotonic() - t0:.1f}s", flush=True)
    model.eval()
    return loss_value


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def train_base(model: Any, tokenizer: Any, identity: dict[str, str], steps: int = 200) -> float:
    """The chat turns of `identity`, plus every demo text as plain language modelling: with tied embeddings,
    a token the base never learned to output is one no small LoRA can make it say."""
    seed_everything(0)
    # The plain texts' first tokens cannot be predicted, so the loss has a floor above zero: a fixed budget.
    batch = batch_of(tokenizer, identity, adapter_answers())
    return fit(model, batch, steps=steps, lr=3e-3, label="base", target_loss=0.0)


def train_adapter(
    base_dir: Path, out: Path, identity: dict[str, str], seed: int, rank: int, targets: list[str]
) -> float:
    """A LoRA on the frozen base that answers as `identity`; saved as a PEFT folder (safetensors)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    seed_everything(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = Qwen2ForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0, task_type="CAUSAL_LM")
    )
    loss = fit(peft_model, batch_of(tokenizer, identity), steps=400, lr=1e-2, label=out.name, target_loss=0.005)
    peft_model.save_pretrained(out, safe_serialization=True)
    return loss
