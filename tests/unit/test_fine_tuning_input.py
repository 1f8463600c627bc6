"""Fine-tune files and hyperparameters: the first bad line named, "auto" resolved, bounds enforced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.errors import InvalidRequest
from gateway.files.validation import BadTrainingFile, check_training_file
from gateway.fine_tuning.hyperparameters import TARGET_MODULES, requested, resolve

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_good_file_counts_its_examples_and_skips_blank_lines(tmp_path: Path) -> None:
    assert check_training_file(write(tmp_path, [json.dumps(GOOD), "", json.dumps(GOOD)])) == 2


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "Line 2:"),
        ('{"messages": []}', 'non-empty "messages"'),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
        ('{"messages": [{"role": "tool", "content": "x"}]}', "messages[0].role"),
        (
            '{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]}',
            "messages[0].content",
        ),
        ('["messages"]', "expected an object"),
    ],
)
def test_the_first_bad_line_is_named_with_the_reason(tmp_path: Path, line: str, reason: str) -> None:
    with pytest.raises(BadTrainingFile) as bad:
        check_training_file(write(tmp_path, [json.dumps(GOOD), line, "{also bad"]))
    assert str(bad.value).startswith("Line 2") and reason in str(bad.value)


def test_too_long_for_the_context_after_the_template(tmp_path: Path) -> None:
    path = write(tmp_path, [json.dumps(GOOD), json.dumps(GOOD)])
    calls = iter([5, 50])
    with pytest.raises(BadTrainingFile, match="Line 2: the conversation is 50 tokens"):
        check_training_file(path, lambda m: next(calls), max_tokens=10)


def test_auto_resolves_to_concrete_values() -> None:
    hyper = resolve(requested({}), examples=10, max_rank=8, max_epochs=50)
    assert hyper == {
        "n_epochs": 10,
        "batch_size": 1,
        "learning_rate_multiplier": 2.0,
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_target_modules": list(TARGET_MODULES),
    }
    assert resolve(requested({}), examples=1000, max_rank=8, max_epochs=50)["n_epochs"] == 3


def test_method_supervised_wins_and_extensions_are_bounded() -> None:
    body = {
        "hyperparameters": {"n_epochs": 2},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4, "lora_rank": 4}}},
    }
    hyper = resolve(requested(body), examples=10, max_rank=8, max_epochs=50)
    assert (hyper["n_epochs"], hyper["lora_rank"], hyper["lora_alpha"]) == (4, 4, 8)
    for bad, param in (
        ({"lora_rank": 9}, "lora_rank"),
        ({"n_epochs": 51}, "n_epochs"),
        ({"n_epochs": True}, "n_epochs"),
        ({"learning_rate_multiplier": 0}, "learning_rate_multiplier"),
        ({"lora_target_modules": []}, "lora_target_modules"),
        ({"beta": 1}, "beta"),
    ):
        with pytest.raises(InvalidRequest) as err:
            resolve(requested({"hyperparameters": bad}), examples=10, max_rank=8, max_epochs=50)
        assert err.value.param == param
    with pytest.raises(InvalidRequest):
        requested({"method": {"type": "dpo"}})
