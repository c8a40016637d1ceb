"""Chat templates for models that ship none (`--chat-template`): a Jinja file or a built-in name.

A template is Jinja source in Hugging Face's convention (`messages`, `add_generation_prompt`,
`bos_token`), set on the tokenizer so every chat path (the OpenAI chat route, `radixgen
generate --chat`, `/get_model_info` for the language's template matching) renders with it.
Built-ins name the token that ends an assistant turn; the engine stops generations there too,
since a base model's own EOS is not it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ChatTemplate:
    source: str  # Jinja
    end_of_turn: str | None = None  # the token ending an assistant turn (None: the model's EOS)


# Jinja string literals interpret "\n", so the sources are raw strings.
_CHATML = ChatTemplate(
    r"""{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}""",
    "<|im_end|>",
)

# Gemma's turns: "user" and "model" only; system messages open the next user turn.
_GEMMA = ChatTemplate(
    r"""{{- bos_token -}}
{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}
{%- set ns.system = ns.system + message['content'] + '\n\n' -%}
{%- else -%}
{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}
{{- '<start_of_turn>' + role + '\n' + (ns.system if role == 'user' else '') -}}
{{- (message['content'] | trim) + '<end_of_turn>\n' -}}
{%- if role == 'user' -%}{%- set ns.system = '' -%}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}""",
    "<end_of_turn>",
)

BUILTIN_CHAT_TEMPLATES: dict[str, ChatTemplate] = {"chatml": _CHATML, "gemma": _GEMMA}

NO_TEMPLATE_HELP = (
    "this model has no chat template: start the server with --chat-template NAME_OR_FILE "
    f"(a Jinja file, or one of: {', '.join(sorted(BUILTIN_CHAT_TEMPLATES))}), "
    "or send a plain prompt to /v1/completions or /generate"
)


def load_chat_template(value: str) -> ChatTemplate:
    """The template `--chat-template` names: a built-in name, or a Jinja file's contents."""
    if value in BUILTIN_CHAT_TEMPLATES:
        return BUILTIN_CHAT_TEMPLATES[value]
    path = Path(value).expanduser()
    if path.is_file():
        return ChatTemplate(path.read_text())
    raise ValueError(
        f"chat template {value!r} is neither a file nor a built-in name "
        f"({', '.join(sorted(BUILTIN_CHAT_TEMPLATES))})"
    )
