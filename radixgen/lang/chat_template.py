"""Chat templates: how `system/user/assistant` roles become text.

Templates are registered by name (`get_chat_template("chatml")`). A backend picks one with
`choose_chat_template`, in this order:

1. an explicit name (`RuntimeEndpoint(url, chat_template_name="chatml")`);
2. SGLang's model-path matchers (substring tests on the lower-cased path), first match wins;
3. the model's own Jinja chat template, when the backend can read it (the in-process engine's
   tokenizer; a radixgen server's `/get_model_info` field `chat_template`) and it has a known
   shape (ChatML, Llama 3, Gemma);
4. `"default"`.

Step 3 is radixgen's addition: SmolLM2-135M-Instruct matches no path rule (SGLang falls back to
"default") but its Jinja template is ChatML, so radixgen backends use "chatml" for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, auto


class ChatTemplateStyle(Enum):
    PLAIN = auto()
    LLAMA2 = auto()  # the first system turn is merged into the first user turn


@dataclass
class ChatTemplate:
    name: str
    default_system_prompt: str | None
    role_prefix_and_suffix: dict[str, tuple[str, str]]
    stop_str: tuple[str, ...] = ()
    image_token: str = "<image>"
    audio_token: str = "<audio>"
    style: ChatTemplateStyle = ChatTemplateStyle.PLAIN

    def get_prefix_and_suffix(self, role: str, hist_messages: list[dict]) -> tuple[str, str]:
        prefix, suffix = self.role_prefix_and_suffix.get(role, ("", ""))
        if self.style is ChatTemplateStyle.LLAMA2:
            if role == "system" and not hist_messages:
                user_prefix = self.role_prefix_and_suffix.get("user", ("", ""))[0]
                return user_prefix + prefix, suffix
            first_is_system = len(hist_messages) == 1 and hist_messages[0]["content"] is not None
            if role == "user" and first_is_system:
                return "", suffix
        return prefix, suffix

    def get_prompt(self, messages: list[dict]) -> str:
        """Render messages; a system message with content None takes the default prompt."""
        out = []
        for i, message in enumerate(messages):
            content = message["content"]
            if message["role"] == "system" and content is None:
                content = self.default_system_prompt
                if content is None:
                    continue
            prefix, suffix = self.get_prefix_and_suffix(message["role"], messages[:i])
            out.append(f"{prefix}{content}{suffix}")
        return "".join(out)


chat_template_registry: dict[str, ChatTemplate] = {}
matching_function_registry: list[Callable[[str], ChatTemplate | None]] = []


def register_chat_template(template: ChatTemplate) -> None:
    chat_template_registry[template.name] = template


def register_chat_template_matching_function(func: Callable[[str], ChatTemplate | None]):
    """Register `func(model_path) -> ChatTemplate | None`; usable as a decorator."""
    matching_function_registry.append(func)
    return func


def get_chat_template(name: str) -> ChatTemplate:
    try:
        return chat_template_registry[name]
    except KeyError:
        known = ", ".join(sorted(chat_template_registry))
        raise ValueError(f"unknown chat template {name!r}; registered: {known}") from None


def match_chat_template_by_model_path(model_path: str) -> ChatTemplate | None:
    for matcher in matching_function_registry:
        template = matcher(model_path)
        if template is not None:
            return template
    return None


def get_chat_template_by_model_path(model_path: str) -> ChatTemplate:
    """SGLang's rule: the first matcher's template, else "default"."""
    return match_chat_template_by_model_path(model_path) or get_chat_template("default")


def template_name_from_jinja(jinja: str | None) -> str | None:
    """Name of the registered template a model's Jinja chat template renders like, if known."""
    if not jinja:
        return None
    if "<|im_start|>" in jinja and "<|im_end|>" in jinja:
        return "chatml"
    if "<|start_header_id|>" in jinja and "<|eot_id|>" in jinja:
        return "llama-3-instruct"
    if "<start_of_turn>" in jinja and "<end_of_turn>" in jinja:
        return "gemma-it"
    return None


def choose_chat_template(
    name: str | None = None, model_path: str | None = None, jinja: str | None = None
) -> ChatTemplate:
    """Explicit name > model-path matchers > the model's Jinja template > "default"."""
    if name:
        return get_chat_template(name)
    matched = match_chat_template_by_model_path(model_path) if model_path else None
    if matched is not None:
        return matched
    from_jinja = template_name_from_jinja(jinja)
    return get_chat_template(from_jinja or "default")


# --- registered templates ------------------------------------------------------------------


def _roles(system: tuple[str, str], user: tuple[str, str], assistant: tuple[str, str]):
    return {"system": system, "user": user, "assistant": assistant}


def _chatml_roles() -> dict[str, tuple[str, str]]:
    return {r: (f"<|im_start|>{r}\n", "<|im_end|>\n") for r in ("system", "user", "assistant")}


def _header_roles(start: str, end: str, eot: str) -> dict[str, tuple[str, str]]:
    return {r: (f"{start}{r}{end}\n\n", eot) for r in ("system", "user", "assistant")}


_QWEN_SYSTEM = "You are a helpful assistant."
_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_DEEPSEEK_ROLES = _roles(("", ""), ("<｜User｜>", ""), ("<｜Assistant｜>", "<｜end▁of▁sentence｜>"))

for _template in (
    ChatTemplate("default", None, _roles(("SYSTEM:", "\n"), ("USER:", "\n"), ("ASSISTANT:", "\n"))),
    ChatTemplate("claude", None, _roles(("", ""), ("\n\nHuman: ", ""), ("\n\nAssistant:", ""))),
    ChatTemplate("chatml", None, _chatml_roles(), stop_str=("<|im_end|>",)),
    ChatTemplate(
        "chatml-llava",
        _QWEN_SYSTEM,
        _chatml_roles(),
        stop_str=("<|im_end|>",),
        image_token="<image>\n",
    ),
    ChatTemplate("qwen", _QWEN_SYSTEM, _chatml_roles(), stop_str=("<|im_end|>",)),
    ChatTemplate(
        "qwen2-vl",
        _QWEN_SYSTEM,
        _chatml_roles(),
        stop_str=("<|im_end|>",),
        image_token="<|vision_start|><|image_pad|><|vision_end|>",
    ),
    ChatTemplate(
        "vicuna_v1.1",
        _VICUNA_SYSTEM,
        _roles(("", " "), ("USER:", " "), ("ASSISTANT:", "</s>")),
        image_token=" <image>\n",
    ),
    ChatTemplate(
        "llama-2-chat",
        None,
        _roles(("<<SYS>>\n", "\n<</SYS>>\n\n"), ("[INST] ", " [/INST]"), ("", " </s><s>")),
        style=ChatTemplateStyle.LLAMA2,
    ),
    ChatTemplate(
        "llama-3-instruct",
        None,
        _header_roles("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        stop_str=("<|eot_id|>",),
        image_token="<|image|>",
    ),
    ChatTemplate(
        "llama-3-instruct-llava",
        None,
        _header_roles("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        stop_str=("<|eot_id|>",),
        image_token="<image>\n",
    ),
    ChatTemplate(
        "llama-4",
        None,
        _header_roles("<|header_start|>", "<|header_end|>", "<|eot|>"),
        stop_str=("<|eot|>",),
        image_token="<|image|>",
    ),
    ChatTemplate(
        "yi-1.5",
        None,
        _roles(
            ("", ""),
            ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
            ("", "<|im_end|>\n"),
        ),
        stop_str=("<|im_end|>",),
    ),
    ChatTemplate(
        "gemma-it",
        None,
        _roles(
            ("", ""),
            ("<start_of_turn>user\n", "<end_of_turn>\n"),
            ("<start_of_turn>model\n", "<end_of_turn>\n"),
        ),
    ),
    ChatTemplate(
        "c4ai-command-r",
        None,
        {
            role: (f"<|START_OF_TURN_TOKEN|><|{token}_TOKEN|>", "<|END_OF_TURN_TOKEN|>")
            for role, token in (("system", "SYSTEM"), ("user", "USER"), ("assistant", "CHATBOT"))
        },
    ),
    ChatTemplate(
        "granite-3-instruct",
        None,
        {
            role: (f"<|start_of_role|>{role}<|end_of_role|>", "<|end_of_text|>")
            for role in ("system", "user", "assistant")
        },
        stop_str=("<|end_of_text|>",),
    ),
    ChatTemplate("deepseek-v3", None, _DEEPSEEK_ROLES, stop_str=("<｜end▁of▁sentence｜>",)),
):
    register_chat_template(_template)


@dataclass
class _PathRule:
    """`template` when every string of `all_of` and none of `none_of` is in the path."""

    template: str
    all_of: tuple[str, ...]
    none_of: tuple[str, ...] = field(default=())

    def __call__(self, model_path: str) -> ChatTemplate | None:
        path = model_path.lower()
        if all(s in path for s in self.all_of) and not any(s in path for s in self.none_of):
            return get_chat_template(self.template)
        return None


# SGLang's matchers, in its order (first match wins).
for _rule in (
    _PathRule("deepseek-v3", ("deepseek-v3",), ("base",)),
    _PathRule("deepseek-v3", ("deepseek-r1",), ("base",)),
    _PathRule("vicuna_v1.1", ("vicuna",)),
    _PathRule("vicuna_v1.1", ("llava-v1.5",)),
    _PathRule("vicuna_v1.1", ("llava-next-video-7b",)),
    _PathRule("llama-2-chat", ("llama-2", "chat")),
    _PathRule("llama-2-chat", ("mistral", "instruct")),
    _PathRule("llama-2-chat", ("mixtral", "instruct")),
    _PathRule("llama-2-chat", ("codellama", "instruct")),
    _PathRule("llama-3-instruct", ("llama-3", "instruct")),
    _PathRule("chatml", ("tinyllama",)),
    _PathRule("qwen2-vl", ("qwen", "vl")),
    _PathRule("qwen", ("qwen", "chat"), ("llava",)),
    _PathRule("qwen", ("qwen", "instruct"), ("llava",)),
    _PathRule("chatml-llava", ("llava-v1.6-34b",)),
    _PathRule("chatml-llava", ("llava-v1.6-yi-34b",)),
    _PathRule("chatml-llava", ("llava-next-video-34b",)),
    _PathRule("chatml-llava", ("llava-onevision-qwen2",)),
    _PathRule("yi-1.5", ("yi-1.5", "chat")),
    _PathRule("gemma-it", ("gemma", "it")),
    _PathRule("c4ai-command-r", ("c4ai-command-r",)),
    _PathRule("granite-3-instruct", ("granite", "instruct")),
):
    register_chat_template_matching_function(_rule)
