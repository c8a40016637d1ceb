"""`RuntimeEndpoint`: a backend over the native HTTP API of a radixgen (or SGLang) server.

Requests are the bodies SGLang's frontend sends (see native_protocol.py); any non-200 answer raises
`RuntimeError` with the server's error body. Streams are read as server-sent events carrying
cumulative outputs, up to `data: [DONE]`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx

from radixgen.lang.backend.native_protocol import NativeBackend, Output
from radixgen.lang.chat_template import choose_chat_template


class RuntimeEndpoint(NativeBackend):
    support_concate_and_append = False  # no server defines /concate_and_append_request today

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        verify: str | bool | None = None,
        chat_template_name: str | None = None,
    ):
        """`verify`: TLS verification (a CA bundle path, or False). The chat template:
        `chat_template_name`, else SGLang's path rules on `/get_model_info`'s `model_path`,
        else the model's Jinja template if the server reports it (radixgen does), else
        "default"."""
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.verify = verify
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        self.client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            verify=True if verify is None else verify,
            timeout=httpx.Timeout(None, connect=30.0),  # generations may take long
        )
        self.model_info = self._request("GET", "/get_model_info").json()
        self.chat_template = choose_chat_template(
            chat_template_name,
            self.model_info.get("model_path"),
            self.model_info.get("chat_template"),
        )

    # --- transport ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        _raise_for_status(response)
        return response

    def _post_generate(self, payload: dict[str, Any]) -> Output | list[Output]:
        return self._request("POST", "/generate", json=payload).json()

    def _stream_generate(self, payload: dict[str, Any]) -> Iterator[Output]:
        with self.client.stream("POST", "/generate", json=payload) as response:
            if response.status_code != 200:
                response.read()
                _raise_for_status(response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    break
                out = json.loads(data)
                if "error" in out:
                    raise RuntimeError(out["error"])
                yield out

    # --- administration ------------------------------------------------------------------------

    def get_model_name(self) -> str:
        return self.model_info["model_path"]

    def flush_cache(self, empty_cache: bool = True) -> bool:
        self._request("POST", "/flush_cache", json={"empty_cache": empty_cache})
        return True

    def get_server_info(self) -> dict[str, Any]:
        return self._request("GET", "/get_server_info").json()

    def start_profile(self) -> None:
        self._request("GET", "/start_profile")

    def stop_profile(self) -> None:
        self._request("GET", "/stop_profile")

    def concatenate_and_append(self, src_rids: list[str], dst_rid: str) -> None:
        payload = {"src_rids": src_rids, "dst_rid": dst_rid}
        self._request("POST", "/concate_and_append_request", json=payload)

    def shutdown(self) -> None:
        self.client.close()


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code == 200:
        return
    try:
        content = response.json()
    except ValueError:
        content = response.text
    raise RuntimeError(content)
