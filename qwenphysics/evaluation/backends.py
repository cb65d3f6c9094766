"""Ways to ask a model a chat question: an OpenAI-compatible endpoint or a GGUF file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import openai

from .exceptions import EvalError, QuestionFailed


class EndpointBackend:
    """Any OpenAI-compatible server (llama.cpp's llama-server, vLLM, a hosted API)."""

    kind = "endpoint"

    def __init__(self, base_url: str, api_key: str | None, model: str | None, timeout: float = 300):
        self._openai = openai
        self.base_url = base_url.rstrip("/")
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key or "none", timeout=timeout, max_retries=1
        )
        try:
            self.served = [m.id for m in self.client.models.list()]
        except openai.APIConnectionError as exc:
            raise EvalError(f"cannot reach {self.base_url} ({exc}); is the server running?") from None
        except openai.AuthenticationError:
            raise EvalError(f"{self.base_url} rejected the API key; pass the right --api-key") from None
        except openai.APIError:
            self.served = []  # /models is optional for some servers
        if model is None:
            if not self.served:
                raise EvalError(f"{self.base_url} lists no models; pass --model")
            model = self.served[0]
        self.model = model

    def identity(self) -> dict:
        return {"backend": self.kind, "base_url": self.base_url, "model": self.model,
                "served_models": self.served}

    def chat(self, messages: list[dict], temperature: float, max_tokens: int) -> str:
        openai = self._openai
        try:
            resp = self.client.chat.completions.create(
                # plain role/content dicts: the shape of the SDK's message TypedDicts
                model=self.model, messages=cast(Any, messages), temperature=temperature, max_tokens=max_tokens
            )
        except openai.APITimeoutError:
            raise QuestionFailed("request timed out") from None
        except openai.APIConnectionError as exc:
            raise EvalError(f"lost the connection to {self.base_url} ({exc})") from None
        except openai.NotFoundError:
            raise EvalError(f"{self.base_url} has no model {self.model!r}; check --model") from None
        except openai.APIStatusError as exc:
            raise QuestionFailed(f"HTTP {exc.status_code}: {str(exc)[:200]}") from None
        if not resp.choices:
            return ""
        return resp.choices[0].message.content or ""


def load_llama(path: Path, n_ctx: int, logits_all: bool = False):
    """A llama-cpp-python model (imported here so the rest works without it)."""
    try:
        from llama_cpp import Llama  # noqa: PLC0415 - optional: llama-cpp-python, asked for only when a GGUF is read in-process
    except ImportError:
        raise EvalError(
            "reading a GGUF file needs llama-cpp-python in this environment "
            "(scripts/setup.sh installs it)"
        ) from None
    kwargs: dict[str, Any] = {"model_path": str(path), "n_ctx": n_ctx, "verbose": False}
    if logits_all:
        kwargs.update(logits_all=True, n_batch=min(512, n_ctx))
    try:
        return Llama(**kwargs)
    except (ValueError, RuntimeError) as exc:
        raise EvalError(f"llama.cpp could not load {path} ({exc})") from None


class GGUFBackend:
    """A GGUF file run in-process through llama-cpp-python with its own chat template."""

    kind = "gguf"

    def __init__(self, path: Path, n_ctx: int = 4096):
        self.path = Path(path)
        self.llm = load_llama(self.path, n_ctx)

    def identity(self) -> dict:
        return {"backend": self.kind, "model": self.path.name}

    def chat(self, messages: list[dict], temperature: float, max_tokens: int) -> str:
        resp = self.llm.create_chat_completion(
            messages=messages, temperature=temperature, max_tokens=max_tokens
        )
        return resp["choices"][0]["message"].get("content") or ""

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close:
            close()
        self.llm = None
