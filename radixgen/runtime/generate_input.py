"""`GenerateInput`: one generation request as SGLang's native API (`GenerateReqInput`) shapes it,
validated in full before anything reaches the scheduler.

`Engine.generate` builds one from its arguments, and `/generate` receives one (its body model
subclasses this one), so the engine, the native API and the language share every rule. Limits
that depend on the engine's configuration (batch size, `n`, context length, the vocabulary) are
checked by the engine when it turns the input into requests.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from radixgen.runtime.sampling_params import SamplingParams, Text, TokenId
from radixgen.runtime.validation import InvalidRequestError, first_error

MAX_TOP_LOGPROBS = 20  # as the OpenAI API: each reported position carries this many
MAX_LABEL_CHARS = 256

Label = Annotated[Text, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
ImageSource = Annotated[Text, Field(min_length=1)]  # data URL, base64 or a local file path


class GenerateInput(BaseModel):
    """Exactly one of `text` and `input_ids`; a list of either is a batch. `rid` labels the
    request (or each prompt of a batch) in outputs and for `/abort_request`: it is the caller's
    name for it, never the engine's key, so equal labels of different callers never meet."""

    model_config = ConfigDict(extra="forbid")

    text: Text | list[Text] | None = None
    input_ids: list[TokenId] | list[list[TokenId]] | None = None
    sampling_params: SamplingParams | list[SamplingParams] | None = None
    rid: Label | list[Label] | None = None
    return_logprob: StrictBool | None = None
    logprob_start_len: Annotated[StrictInt, Field(ge=-1)] | None = None
    top_logprobs_num: Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    return_text_in_logprobs: StrictBool | None = None
    stream: StrictBool | None = None
    # One prompt: an image or a list of images; a batch: one entry (image, list, None) per prompt.
    image_data: ImageSource | list[ImageSource | list[ImageSource] | None] | None = None

    @classmethod
    def of(cls, **values: Any) -> GenerateInput:
        """Validate keyword arguments (the engine's API), raising `InvalidRequestError`."""
        if isinstance(values.get("sampling_params"), dict):
            values["sampling_params"] = SamplingParams.from_dict(values["sampling_params"])
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise first_error(exc.errors(include_url=False, include_input=False)) from None

    @property
    def is_single(self) -> bool:
        """One prompt (a string, or a flat list of token ids) rather than a batch."""
        if self.text is not None:
            return isinstance(self.text, str)
        return bool(self.input_ids) and isinstance(self.input_ids[0], int)

    def prompts(self) -> list[str] | list[list[int]]:
        """The batch: texts or token-id lists, one per prompt; raises on an empty batch."""
        if (self.text is None) == (self.input_ids is None):
            raise InvalidRequestError("exactly one of text and input_ids is required", "text")
        field = "text" if self.text is not None else "input_ids"
        if self.is_single:
            batch = [self.text if self.text is not None else self.input_ids]
        else:
            batch = list(self.text if self.text is not None else self.input_ids)
        if not batch:
            raise InvalidRequestError("the batch is empty", field)
        return batch

    def params_for(self, count: int) -> list[SamplingParams]:
        """One `SamplingParams` per prompt: a single object applies to all; a list must match."""
        params = self.sampling_params
        if isinstance(params, list):
            if len(params) != count:
                raise InvalidRequestError(
                    f"sampling_params has {len(params)} entries for {count} prompts",
                    "sampling_params",
                )
            return params
        return [params or SamplingParams()] * count

    def images_for(self, count: int) -> list[list[str]]:
        """The image sources of each prompt, in prompt order (the i-th image fills the i-th
        image token of its prompt)."""
        data = self.image_data
        if data is None:
            return [[] for _ in range(count)]
        if self.is_single:
            if isinstance(data, str):
                return [[data]]
            if len(data) == 1 and isinstance(data[0], list):
                return [list(data[0])]
            if any(not isinstance(item, str) for item in data):
                raise InvalidRequestError(
                    "image_data of one prompt is an image or a list of images", "image_data"
                )
            return [list(data)]
        if not isinstance(data, list) or len(data) != count:
            raise InvalidRequestError(
                f"image_data of a batch takes one entry per prompt ({count})", "image_data"
            )
        return [[] if item is None else [item] if isinstance(item, str) else item for item in data]

    def labels_for(self, count: int) -> list[str | None]:
        """The caller's label of each prompt (None: the engine names it)."""
        rid = self.rid
        if isinstance(rid, list):
            if len(rid) != count:
                raise InvalidRequestError(f"rid has {len(rid)} entries for {count} prompts", "rid")
            if len(set(rid)) != len(rid):
                raise InvalidRequestError("rid entries must be distinct", "rid")
            return list(rid)
        if rid is not None and count > 1:
            raise InvalidRequestError("a batch takes a list of rids, one per prompt", "rid")
        return [rid] * count
