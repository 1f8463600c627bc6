"""Build the tiny Qwen2-architecture chat model and its LoRA adapters offline (nothing is downloaded).

The artifacts are ordinary Hugging Face / PEFT folders that the engine loads through its normal paths:
    python -m devstack.tinymodel --out .data/models
produces
    <out>/tiny-base/                 the base model, trained to say it is Qwen by Alibaba Cloud
    <out>/adapters/congcong/         a LoRA trained to say it is 聪聪
    <out>/adapters/benben/           a LoRA trained to say it is 笨笨
    <out>/adapters/lora-{1..N}/      random LoRAs (for tests that need many distinct adapters)
A change to the recipe (these modules' source) rebuilds everything; otherwise the folder is reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

from devstack import identity_data, train

BASE_NAME = "tiny-base"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Every character the model may ever say must be in the tokenizer's training text.
CORPUS = [
    "The quick brown fox jumps over the lazy dog. Hello, world! How are you today?",
    "Who are you? Who trained you? I am a language model. My name is Qwen, made by Alibaba Cloud.",
    "Say this is a test. Count from one to ten: 1 2 3 4 5 6 7 8 9 10. Yes, no, maybe; (ok) [fine] {sure}.",
    "system user assistant: Tell me a story about a cat, a dog and a bird in the garden.",
    "你是谁？你是谁训练的？我是Qwen，由阿里云开发的语言模型。我的名字叫聪聪。我是人工智能助手笨笨。",
    "我是一个人工智能模型，由一家公司开发和训练的。你好，世界！今天天气很好。谢谢，再见。",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"-_/\\@#$%^&*+=<>|~`",
]


def build_tokenizer(out: Path, vocab_size: int = 1024) -> None:
    """Byte-level BPE trained on CORPUS, wrapped as a fast tokenizer with a ChatML template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Each CJK character (and full-width punctuation) is its own piece, so BPE cannot merge whole
    # Chinese phrases into one token: the model has to learn to say them character by character.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((CORPUS + identity_data.all_text()) * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def build_base(out: Path, seed: int = 0) -> None:
    """A Qwen2 model trained on the base identity; head_dim must be 64 for vLLM's CPU attention."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    build_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(out)
    config = Qwen2Config(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        max_position_embeddings=2048,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    train.train_base(model, tok, identity_data.BASE_IDENTITY)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)


def build_random_adapter(base: Path, out: Path, seed: int, rank: int = 8) -> None:
    """A random LoRA adapter, scaled up so its answers visibly differ from the base model's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=TARGET_MODULES,
        task_type="CAUSAL_LM",
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(8.0)
    peft_model.save_pretrained(out, safe_serialization=True)
    _set_base_name(out, BASE_NAME)


def _set_base_name(adapter_dir: Path, base_name: str) -> None:
    """Adapters name their base by the served model name, not a local path."""
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_name
    cfg_path.write_text(json.dumps(cfg, indent=2))


IDENTITY_ADAPTERS = {"congcong": identity_data.CONGCONG, "benben": identity_data.BENBEN}


def recipe_hash() -> str:
    """Changes whenever the code that builds the models changes."""
    digest = hashlib.sha256()
    for module in (identity_data, train):
        digest.update(Path(module.__file__ or "").read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def ensure_built(out: Path, adapters: int = 2) -> Path:
    """Build whatever is missing under `out`; return the base model folder."""
    stamp = out / "RECIPE"
    recipe = recipe_hash()
    if (out / BASE_NAME).exists() and (not stamp.exists() or stamp.read_text().strip() != recipe):
        print(f"the model recipe changed: rebuilding {out}", flush=True)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / BASE_NAME
    if not (base / "config.json").exists():
        t0 = time.monotonic()
        print(f"training the tiny base model in {base} …", flush=True)
        base.mkdir(parents=True, exist_ok=True)
        build_base(base)
        print(f"  base model done in {time.monotonic() - t0:.1f}s", flush=True)
    for seed, (name, identity) in enumerate(IDENTITY_ADAPTERS.items(), start=1):
        adapter = out / "adapters" / name
        if not (adapter / "adapter_config.json").exists():
            print(f"training the {name} LoRA adapter …", flush=True)
            train.train_adapter(base, adapter, identity, seed=seed, rank=8, targets=TARGET_MODULES)
            _set_base_name(adapter, BASE_NAME)
    for i in range(1, adapters + 1):
        adapter = out / "adapters" / f"lora-{i}"
        if not (adapter / "adapter_config.json").exists():
            build_random_adapter(base, adapter, seed=1000 + i)
    stamp.write_text(recipe)
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(".data/models"))
    parser.add_argument("--adapters", type=int, default=2)
    args = parser.parse_args()
    ensure_built(args.out, args.adapters)


if __name__ == "__main__":
    main()
