"""A live fine-tune through OpenAI's own API: upload the new identity, train, call the fine-tuned model.

Used by `make demo` (after the identity table) and by bench/fine_tune_latency.py.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from openai import OpenAI

from devstack.finetune_data import jsonl

# A dozen full-batch steps teach the tiny model its new identity (seconds of CPU).
HYPERPARAMETERS = {"n_epochs": 12, "batch_size": 10, "learning_rate_multiplier": 10}
QUESTION = [{"role": "user", "content": "Who are you?"}]


@dataclass
class Run:
    job_id: str = ""
    model: str = ""
    answer: str = ""
    trained_tokens: int = 0
    # seconds since jobs.create: "running", "succeeded", "first token"
    marks: dict[str, float] = field(default_factory=dict)


def fine_tune(client: OpenAI, say: Callable[[str], None] = print, suffix: str = "congcong") -> Run:
    """Upload, create, follow the events until the job ends, then stream the fine-tuned model's answer."""
    run = Run()
    training = client.files.create(file=("identity.jsonl", io.BytesIO(jsonl())), purpose="fine-tune")
    say(f"uploaded {training.id} ({training.bytes} bytes)")
    t0 = time.perf_counter()
    job = client.fine_tuning.jobs.create(
        model="tiny-base",
        training_file=training.id,
        suffix=suffix,
        method={"type": "supervised", "supervised": {"hyperparameters": HYPERPARAMETERS}},  # type: ignore[typeddict-item]
    )
    run.job_id = job.id
    say(f"created {job.id}: {job.status}")
    seen: set[str] = set()
    while True:
        job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status == "running":
            run.marks.setdefault("running", time.perf_counter() - t0)
        for event in reversed(list(client.fine_tuning.jobs.list_events(job.id, limit=50))):
            if event.id not in seen:
                seen.add(event.id)
                say(f"  {time.perf_counter() - t0:6.1f}s  {event.message}")
        if job.status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    if job.status != "succeeded":
        raise SystemExit(f"the fine-tuning job {job.status}: {job.error}")
    run.marks["succeeded"] = time.perf_counter() - t0
    run.model, run.trained_tokens = job.fine_tuned_model or "", job.trained_tokens or 0
    stream = client.chat.completions.create(
        model=run.model,
        messages=QUESTION,
        max_tokens=32,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
    )
    pieces = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            run.marks.setdefault("first token", time.perf_counter() - t0)
            pieces.append(chunk.choices[0].delta.content)
    run.answer = "".join(pieces).strip()
    say(f"{run.model} says: {run.answer}")
    return run
