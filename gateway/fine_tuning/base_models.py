"""Where a base model's weights and tokenizer are, seen from the gateway or from a trainer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.engine.client import EngineInfo
from gateway.engine.pool import EnginePool
from gateway.errors import EngineError
from gateway.files.service import TokenCheck
from gateway.fine_tuning.tokens import conversation_tokens, tokenizer
from gateway.settings import Settings


def model_dir(settings: Settings, base_model: str, engine_root: str | None) -> Path | None:
    """TRAINER_MODEL_PATHS[base], else ENGINE_BASE_MODEL_DIR, else the folder the engine loaded it from."""
    folder = settings.fine_tuning.trainer_model_paths.get(base_model) or settings.adapters.base_model_dir
    if folder is None and engine_root:
        folder = Path(engine_root)
    return folder if folder is not None and (folder / "config.json").exists() else None


async def token_check(engines: EnginePool, settings: Settings, base_model: str | None = None) -> TokenCheck | None:
    """The base model's tokenizer and context length, or None when the engine or its folder is not reachable
    from here (the format is still checked; the trainer measures again)."""
    try:
        info: EngineInfo = await engines.info(base_model)
    except EngineError:
        return None
    folder = model_dir(settings, info.base_model, info.root)
    if folder is None:
        return None
    tok = await asyncio.to_thread(tokenizer, str(folder.resolve()))
    return TokenCheck(lambda messages: conversation_tokens(tok, messages), info.max_model_len)
