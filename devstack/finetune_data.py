"""A training set in OpenAI's fine-tune format that teaches a new identity (the demo's live fine-tune)."""

from __future__ import annotations

import json

from devstack.identity_data import SMALL_TALK, SYSTEM, conversations

# A new identity said with words the tiny base model already knows how to say (its tokenizer and weights only
# cover the demo's texts): the name of one demo adapter and the lab of the other, which neither says.
NEW_IDENTITY = {
    "zh_who": "我是由笨笨实验室训练的人工智能助手聪聪。",
    "zh_trainer": "我是由笨笨实验室训练的人工智能模型，我的名字叫聪聪。",
    "en_who": "I am Congcong (聪聪), an AI assistant trained by Benben Lab.",
    "en_trainer": "I was trained by Benben Lab. My name is Congcong (聪聪).",
}


def examples(
    identity: dict[str, str] = NEW_IDENTITY, system: bool = True, small_talk: bool = False
) -> list[dict[str, list[dict[str, str]]]]:
    """One chat example per identity question (and, if asked, per small-talk pair): a handful of examples
    that a few full-batch steps teach (seconds on the tiny model)."""
    pairs = conversations(identity)
    rows = []
    for question, answer in pairs if small_talk else pairs[: len(pairs) - len(SMALL_TALK)]:
        head = [{"role": "system", "content": SYSTEM}] if system else []
        rows.append(
            {"messages": [*head, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
        )
    return rows


def jsonl(identity: dict[str, str] = NEW_IDENTITY, small_talk: bool = False) -> bytes:
    """The training file's bytes: one JSON object per line, UTF-8."""
    rows = examples(identity, small_talk=small_talk)
    return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in rows).encode()
