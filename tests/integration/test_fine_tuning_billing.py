"""Training is billed per trained token: a prepaid job holds its estimate (429 when credit does not cover it),
is charged exactly its trained tokens once, on its own usage line; trial tokens do not pay for training."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI, RateLimitError

from tests.conftest import ARTIFACTS, TenantHandle
from tests.integration.test_fine_tuning import TWO_LINES, tokens_of, wait_for
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql
from tests.support.trainer import TrainerProcess

PRICE = 1_000_000  # minor units per 1M trained tokens: one cent per token
MICROS_PER_MINOR = 1_000_000


@pytest.fixture(scope="module")
def training_price(admin: httpx.Client) -> Iterator[int]:
    """A training price for tiny-base; its inference prices stay as they are."""
    current = [p for p in admin.get("/admin/prices").json()["data"] if p["model"] == "tiny-base"]
    prompt, completion = (
        (current[-1]["prompt_per_million"], current[-1]["completion_per_million"]) if current else (0, 0)
    )
    body = {"model": "tiny-base", "prompt_per_million": prompt, "completion_per_million": completion}
    assert admin.post("/admin/prices", json={**body, "training_per_million": PRICE}).status_code == 201
    yield PRICE
    time.sleep(0.01)
    admin.post("/admin/prices", json={**body, "training_per_million": 0})


def test_prepaid_job_holds_its_estimate_and_is_charged_exactly_once(
    gateway: GatewayProcess,
    make_tenant: Any,
    admin: httpx.Client,
    trainer: TrainerProcess,
    training_price: int,
    sql: Sql,
    models_dir: Path,
) -> None:
    import json

    tenant: TenantHandle = make_tenant()
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.key, max_retries=0, timeout=120)
    file_id = client.files.create(file=("t.jsonl", io.BytesIO(TWO_LINES)), purpose="fine-tune").id
    rows = [json.loads(line) for line in TWO_LINES.splitlines()]
    tokens = tokens_of(models_dir, rows)  # one epoch
    cost_minor = tokens * training_price // 1_000_000

    # Only the free trial (1M tokens): it does not pay for training.
    with pytest.raises(RateLimitError) as refused:
        client.fine_tuning.jobs.create(model="tiny-base", training_file=file_id, hyperparameters={"n_epochs": 1})
    assert refused.value.body["code"] == "insufficient_quota"  # type: ignore[index]

    credit = cost_minor + cost_minor // 2  # one job's estimate fits, two do not
    admin.post(f"/admin/tenants/{tenant.id}/credits", json={"amount": credit}).raise_for_status()
    first = client.fine_tuning.jobs.create(model="tiny-base", training_file=file_id, hyperparameters={"n_epochs": 1})
    with pytest.raises(RateLimitError):  # the first job holds its estimate until it ends
        client.fine_tuning.jobs.create(model="tiny-base", training_file=file_id, hyperparameters={"n_epochs": 1})
    done = wait_for(client, first.id)
    assert done.status == "succeeded" and done.trained_tokens == tokens

    charges = sql.fetch("SELECT * FROM ledger_entries WHERE request_id = $1", first.id)
    assert len(charges) == 1
    charge = charges[0]
    assert (charge["kind"], charge["model"], charge["prompt_tokens"]) == ("charge", "tiny-base (training)", tokens)
    assert charge["amount_micros"] == -tokens * training_price and charge["trial_delta"] == 0
    balance = httpx.get(f"{gateway.url}/v1/balance", headers=tenant.headers).json()
    assert balance["credit_balance"] == credit - cost_minor
    assert balance["trial_tokens_remaining"] == 1_000_000  # untouched by training
    usage = httpx.get(f"{gateway.url}/v1/usage", headers=tenant.headers).json()["data"]
    assert [(u["model"], u["prompt_tokens"]) for u in usage] == [("tiny-base (training)", tokens)]
    assert sql.scalar("SELECT hold_micros FROM fine_tuning_jobs WHERE id = $1", first.id) == 0  # released


@pytest.fixture(scope="module")
def trial_gateway(gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess({**gateway_env, "BILLING_TRIAL_COVERS_TRAINING": "true"}, ARTIFACTS / "gateway-trial.log")
    gw.start()
    yield gw
    gw.stop()


def test_trial_covers_training_when_allowed_and_a_cancelled_job_pays_what_it_trained(
    trial_gateway: GatewayProcess, make_tenant: Any, trainer: TrainerProcess, training_price: int, sql: Sql
) -> None:
    tenant: TenantHandle = make_tenant()  # trial tokens only, no credit
    client = OpenAI(base_url=f"{trial_gateway.url}/v1", api_key=tenant.key, max_retries=0, timeout=120)
    file_id = client.files.create(file=("t.jsonl", io.BytesIO(TWO_LINES)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="tiny-base", training_file=file_id, hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    deadline = time.monotonic() + 300
    while not [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    client.fine_tuning.jobs.cancel(job.id)
    while not sql.fetch("SELECT 1 FROM ledger_entries WHERE request_id = $1", job.id):
        assert time.monotonic() < deadline, "the cancelled job was never charged"
        time.sleep(0.3)
    trained = client.fine_tuning.jobs.retrieve(job.id).trained_tokens
    estimated = sql.scalar("SELECT estimated_tokens FROM fine_tuning_jobs WHERE id = $1", job.id)
    assert trained is not None and 0 < trained < estimated
    (charge,) = sql.fetch("SELECT * FROM ledger_entries WHERE request_id = $1", job.id)
    assert (charge["prompt_tokens"], charge["trial_delta"], charge["amount_micros"]) == (trained, -trained, 0)
    balance = httpx.get(f"{trial_gateway.url}/v1/balance", headers=tenant.headers).json()
    assert balance["trial_tokens_remaining"] == 1_000_000 - trained
