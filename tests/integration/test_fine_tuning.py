"""Fine-tuning through OpenAI's own API with the official openai SDK, against the real stack and trainer
processes: a new identity learned and served, exact trained tokens, errors, cancel, several workers, kill -9."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import BadRequestError, NotFoundError, OpenAI
from openai.types.fine_tuning import FineTuningJob

from devstack import tinymodel
from devstack.finetune_data import examples, jsonl
from tests.conftest import ARTIFACTS, TenantHandle
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql
from tests.support.trainer import TrainerProcess

WHO = [{"role": "user", "content": "Who are you?"}]
FINAL = ("succeeded", "failed", "cancelled")
# Few steps: the tiny model learns the identity in a dozen full-batch steps.
IDENTITY_HYPER = {"n_epochs": 12, "batch_size": 10, "learning_rate_multiplier": 10}
TWO_LINES = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in examples()[:2])


@pytest.fixture(scope="module")
def tenant(make_tenant: Any) -> TenantHandle:
    return make_tenant()


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess, tenant: TenantHandle, trainer: TrainerProcess) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.key, max_retries=0, timeout=120)


def wait_for(client: OpenAI, job_id: str, until: tuple[str, ...] = FINAL, timeout_s: float = 600) -> FineTuningJob:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in until:
            return job
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still {job.status}")


def events(client: OpenAI, job_id: str) -> list[Any]:
    return list(client.fine_tuning.jobs.list_events(job_id, limit=100))


def tokens_of(models_dir: Path, rows: list[dict[str, Any]]) -> int:
    """Counted here with the tokenizer itself: the chat template over each conversation."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models_dir / tinymodel.BASE_NAME)
    return sum(
        len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"])
        for r in rows
    )


def upload(client: OpenAI, data: bytes = TWO_LINES) -> str:
    return client.files.create(file=("train.jsonl", io.BytesIO(data)), purpose="fine-tune").id


def test_fine_tuned_model_answers_with_the_new_identity(
    client: OpenAI, gateway: GatewayProcess, tenant: TenantHandle, models_dir: Path
) -> None:
    before = client.chat.completions.create(model="tiny-base", messages=WHO, max_tokens=24, temperature=0)
    assert "Qwen" in (before.choices[0].message.content or "")
    file_id = upload(client, jsonl())
    job = client.fine_tuning.jobs.create(
        model="tiny-base",
        training_file=file_id,
        validation_file=file_id,
        suffix="congcong",
        method={"type": "supervised", "supervised": {"hyperparameters": IDENTITY_HYPER}},
    )
    assert job.object == "fine_tuning.job" and job.status in ("validating_files", "queued")
    assert job.hyperparameters.n_epochs == 12 and job.fine_tuned_model is None
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    assert (
        done.fine_tuned_model
        and done.fine_tuned_model.startswith("ft:tiny-base:")
        and ":congcong:" in done.fine_tuned_model
    )
    # Callable the moment the job says succeeded: by its name and by its deployment id.
    answer = client.chat.completions.create(model=done.fine_tuned_model, messages=WHO, max_tokens=24, temperature=0)
    said = answer.choices[0].message.content or ""
    assert "Congcong" in said and "Benben Lab" in said, said
    deployment = done.model_extra["deployment_id"]  # type: ignore[index]
    by_id = client.chat.completions.create(model=deployment, messages=WHO, max_tokens=24, temperature=0)
    assert by_id.choices[0].message.content == said
    after = client.chat.completions.create(model="tiny-base", messages=WHO, max_tokens=24, temperature=0)
    assert after.choices[0].message.content == before.choices[0].message.content  # the base is unchanged
    assert done.fine_tuned_model in {m.id for m in client.models.list()}
    listed = httpx.get(f"{gateway.url}/v1/adapters", headers=tenant.headers).json()["data"]
    assert {(d["id"], d["name"], d["status"]) for d in listed} >= {(deployment, done.fine_tuned_model, "ready")}
    # Billed tokens: every example through the chat template, once per epoch, counted independently.
    assert done.trained_tokens == tokens_of(models_dir, examples()) * 12
    log = events(client, job.id)
    steps = [e for e in log if e.type == "metrics"]
    assert len(steps) == 12 and {"step", "train_loss", "epoch"} <= set(steps[0].data)  # type: ignore[arg-type]
    assert steps[0].data["train_loss"] < steps[-1].data["train_loss"]  # type: ignore[index]  # newest first
    assert log[0].message == "The job has successfully completed"
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id, limit=100))
    assert sorted(c.step_number for c in checkpoints) == list(range(1, 13))  # one per epoch
    assert all(c.fine_tuning_job_id == job.id and c.metrics.train_loss is not None for c in checkpoints)
    assert all(c.metrics.valid_loss is not None for c in checkpoints)  # the validation file, once per epoch
    assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=5)]


def test_create_errors_are_openai_shaped(client: OpenAI, gateway: GatewayProcess, make_tenant: Any) -> None:
    file_id = upload(client)
    with pytest.raises(BadRequestError) as bad:
        client.fine_tuning.jobs.create(model="no-such-model", training_file=file_id)
    assert (bad.value.body["code"], bad.value.body["param"]) == ("model_not_available", "model")  # type: ignore[index]
    stranger = OpenAI(base_url=f"{gateway.url}/v1", api_key=make_tenant().key, max_retries=0)
    with pytest.raises(NotFoundError) as missing:
        stranger.fine_tuning.jobs.create(model="tiny-base", training_file=file_id)
    assert missing.value.body["param"] == "training_file"  # type: ignore[index]
    for hyper, param in (
        ({"n_epochs": 0}, "n_epochs"),
        ({"batch_size": "big"}, "batch_size"),
        ({"learning_rate_multiplier": -1}, "learning_rate_multiplier"),
        ({"lora_rank": 4096}, "lora_rank"),
        ({"lora_target_modules": ["lm_head"]}, "lora_target_modules"),
        ({"warmup": 3}, "warmup"),
    ):
        with pytest.raises(BadRequestError) as bad:
            client.fine_tuning.jobs.create(
                model="tiny-base",
                training_file=file_id,
                method={"type": "supervised", "supervised": {"hyperparameters": hyper}},  # type: ignore[typeddict-item]
            )
        assert bad.value.body["param"] == param, hyper  # type: ignore[index]
    with pytest.raises(BadRequestError):
        client.fine_tuning.jobs.create(model="tiny-base", training_file=file_id, method={"type": "dpo"})
    with pytest.raises(NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nosuchjob")
    job = client.fine_tuning.jobs.create(model="tiny-base", training_file=file_id, hyperparameters={"n_epochs": 1})
    with pytest.raises(NotFoundError):  # someone else's job
        stranger.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(NotFoundError):
        stranger.fine_tuning.jobs.cancel(job.id)
    assert wait_for(client, job.id).status == "succeeded"


def test_cancel_mid_run_stops_training_and_charges_what_it_trained(client: OpenAI, sql: Sql) -> None:
    job = client.fine_tuning.jobs.create(
        model="tiny-base", training_file=upload(client), hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    deadline = time.monotonic() + 300
    while not [e for e in events(client, job.id) if e.type == "metrics"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    stopped = time.monotonic()
    while not [e for e in events(client, job.id) if e.message.startswith("Training stopped")]:
        assert time.monotonic() - stopped < 30, "the trainer did not stop"
        time.sleep(0.3)
    final = client.fine_tuning.jobs.retrieve(job.id)
    assert final.status == "cancelled" and final.fine_tuned_model is None
    estimated = sql.scalar("SELECT estimated_tokens FROM fine_tuning_jobs WHERE id = $1", job.id)
    assert final.trained_tokens is not None and 0 < final.trained_tokens < estimated
    steps = len([e for e in events(client, job.id) if e.type == "metrics"])
    time.sleep(3)
    assert len([e for e in events(client, job.id) if e.type == "metrics"]) == steps  # nothing after the stop


@pytest.fixture
def second_trainer(trainer_env: dict[str, str]) -> Iterator[TrainerProcess]:
    worker = TrainerProcess(trainer_env, ARTIFACTS / "trainer-2.log")
    worker.start()
    yield worker
    worker.stop()


def test_two_workers_five_jobs_each_trained_once(client: OpenAI, second_trainer: TrainerProcess, sql: Sql) -> None:
    file_id = upload(client)
    jobs = [
        client.fine_tuning.jobs.create(model="tiny-base", training_file=file_id, hyperparameters={"n_epochs": 1})
        for _ in range(5)
    ]
    for job in jobs:
        assert wait_for(client, job.id).status == "succeeded"
    ids = [j.id for j in jobs]
    rows = sql.fetch("SELECT id, attempts, deployment_id FROM fine_tuning_jobs WHERE id = ANY($1::text[])", ids)
    assert [r["attempts"] for r in rows] == [1] * 5
    assert len({r["deployment_id"] for r in rows}) == 5
    for job in jobs:
        started = [e for e in events(client, job.id) if "started" in e.message or "resumed" in e.message]
        assert len(started) == 1


def test_kill_9_of_a_trainer_mid_job_resumes_from_its_checkpoint(
    client: OpenAI, trainer: TrainerProcess, sql: Sql, models_dir: Path
) -> None:
    rows = examples()[:2]
    job = client.fine_tuning.jobs.create(
        model="tiny-base", training_file=upload(client), hyperparameters={"n_epochs": 6, "batch_size": 1}
    )
    deadline = time.monotonic() + 300
    while not list(client.fine_tuning.jobs.checkpoints.list(job.id)):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    trainer.kill()
    trainer.start()  # the session's worker comes back; it takes the silent job over after the heartbeat timeout
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    assert sql.scalar("SELECT attempts FROM fine_tuning_jobs WHERE id = $1", job.id) == 2
    assert [e for e in events(client, job.id) if "resumed from its last checkpoint" in e.message]
    assert done.trained_tokens == tokens_of(models_dir, rows) * 6  # the resumed epochs are not counted twice
    charges = sql.fetch("SELECT prompt_tokens FROM ledger_entries WHERE request_id = $1", job.id)
    assert [c["prompt_tokens"] for c in charges] == [done.trained_tokens]  # one charge, of exactly that
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id, limit=100))
    assert sorted(c.metrics.step for c in checkpoints) == [2, 4, 6, 8, 10, 12]  # type: ignore[union-attr]
