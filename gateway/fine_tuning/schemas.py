"""OpenAI's fine-tuning objects: job, event, checkpoint (the `openai` SDK's types parse them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.fine_tuning.models import FineTuningCheckpoint, FineTuningEvent, FineTuningJob

_OPENAI_HYPER = ("n_epochs", "batch_size", "learning_rate_multiplier")


def _ts(at: datetime | None) -> int | None:
    return int(at.timestamp()) if at is not None else None


def job_public(job: FineTuningJob) -> dict[str, Any]:
    hyper = dict(job.hyperparameters)
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": _ts(job.created_at),
        "finished_at": _ts(job.finished_at),
        "estimated_finish": _ts(job.estimated_finish),
        "model": job.model,
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": job.tenant_id,
        "status": job.status,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "result_files": [],
        "trained_tokens": job.trained_tokens,
        "seed": job.seed,
        "suffix": job.suffix,
        "error": job.error,
        "hyperparameters": {k: hyper[k] for k in _OPENAI_HYPER if k in hyper},
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "integrations": [],
        "metadata": None,
        "user_provided_suffix": job.suffix,
        "deployment_id": job.deployment_id,
    }


def event_public(event: FineTuningEvent) -> dict[str, Any]:
    return {
        "id": f"ftevent-{event.id}",
        "object": "fine_tuning.job.event",
        "created_at": _ts(event.created_at),
        "level": event.level,
        "message": event.message,
        "type": event.type,
        "data": event.data or {},
    }


def checkpoint_public(ckpt: FineTuningCheckpoint, fine_tuned_model: str) -> dict[str, Any]:
    return {
        "id": ckpt.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": _ts(ckpt.created_at),
        "fine_tuning_job_id": ckpt.job_id,
        "fine_tuned_model_checkpoint": f"{fine_tuned_model}:ckpt-step-{ckpt.step}",
        "step_number": ckpt.step,
        "metrics": {"step": ckpt.step, **ckpt.metrics},
        "epoch": ckpt.epoch,
    }


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more}
