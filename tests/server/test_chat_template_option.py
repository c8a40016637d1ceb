"""`--chat-template`: chats to a model without a template get a 400 saying how to set one; a
built-in name or a Jinja file makes them work. Real `radixgen serve` processes on a tiny
random-weight Llama directory written here (its tokenizer has no chat template), real HTTP.
"""

from __future__ import annotations

import httpx
import pytest
import torch

from radixgen.launcher import running_server
from radixgen.runtime.chat_templates import BUILTIN_CHAT_TEMPLATES, load_chat_template

ARGS = ["--dtype", "float32", "--kv-cache-tokens", "2048", "--log-level", "warning"]
MESSAGES = [{"role": "user", "content": "Hello world"}]


def _chat(path) -> dict:
    return {"model": path.name, "messages": MESSAGES, "max_tokens": 2}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["Hello world, a tiny chat model."] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    assert tokenizer.chat_template is None
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
    )
    path = tmp_path_factory.mktemp("tiny_no_template")
    LlamaForCausalLM(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path, tokenizer


def test_chat_without_a_template_is_400_saying_how_to_set_one(tiny_dir):
    path, _ = tiny_dir
    with running_server([*ARGS, "--model", str(path)]) as server:
        resp = httpx.post(f"{server.url}/v1/chat/completions", json=_chat(path), timeout=60)
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        assert error["param"] == "messages"
        assert "--chat-template" in error["message"] and "chatml" in error["message"]
        # Plain completions still run on the same server.
        body = {"model": path.name, "prompt": "Hello", "max_tokens": 2}
        assert httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).is_success


def test_builtin_and_file_templates_render_chats(tiny_dir, tmp_path):
    path, tokenizer = tiny_dir
    jinja = tmp_path / "qa.jinja"
    jinja.write_text("Q: {{ messages[-1]['content'] }}\nA:")
    for template, rendered in (
        ("chatml", "<|im_start|>user\nHello world<|im_end|>\n<|im_start|>assistant\n"),
        (str(jinja), "Q: Hello world\nA:"),
    ):
        with running_server([*ARGS, "--model", str(path), "--chat-template", template]) as srv:
            resp = httpx.post(f"{srv.url}/v1/chat/completions", json=_chat(path), timeout=60)
            assert resp.status_code == 200, resp.text
            expected = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
            assert resp.json()["usage"]["prompt_tokens"] == expected, template


def test_gemma_template_folds_system_into_the_user_turn(tiny_dir):
    _, tokenizer = tiny_dir
    source = load_chat_template("gemma").source
    text = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
        ],
        chat_template=source,
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == (
        "<|endoftext|><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def test_an_unknown_template_name_is_refused():
    with pytest.raises(ValueError, match="neither a file nor a built-in name"):
        load_chat_template("no-such-template")
    assert set(BUILTIN_CHAT_TEMPLATES) >= {"chatml", "gemma"}
