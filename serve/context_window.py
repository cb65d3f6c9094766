"""
title: QwenPhysics context window
description: Keeps every request inside the llama server's per-chat context: the system prompt and the newest messages that fit, older ones left out (the answer budget is reserved). Answers' bracket-delimited formulas are rewritten with dollars, which Open WebUI typesets as display and inline math.
version: 2
"""

# An Open WebUI filter function, installed and switched on for every model by the provisioning
# (`qwenphysics/provision.py`, which Compose's webui-init runs and the local stack calls). Open WebUI
# sends a whole conversation to an OpenAI-compatible server, and llama.cpp's server refuses a
# request longer than its context with an error that replaces the answer. This filter trims
# the conversation first: the system prompt always, then messages from the newest back while
# they fit in CONTEXT_TOKENS - ANSWER_TOKENS - MARGIN_TOKENS; a newest message that alone is
# too long keeps its beginning and end. Tokens are estimated from characters (LaTeX-heavy
# physics text runs ~3 characters per Qwen2.5 token; CHARS_PER_TOKEN errs short).

#
# The outlet rewrites an answer's \[...\] and \(...\) (which Qwen models often write) as
# $$...$$ and $...$ once the answer is complete, outside code: Open WebUI 0.12 typesets \[...\]
# in text style, not as a display block. The system prompt asks for dollars in the first place.

import re

from pydantic import BaseModel, Field

_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
_DISPLAY = re.compile(r"\\\[(.+?)\\\]", re.S)
_INLINE = re.compile(r"\\\((.+?)\\\)", re.S)


def dollar_math(text: str) -> str:
    """\\[x\\] -> $$x$$ on lines of its own, \\(x\\) -> $x$; code spans and blocks untouched."""
    parts = _CODE.split(text)
    for i in range(0, len(parts), 2):  # even parts are outside code
        part = _DISPLAY.sub(lambda m: "\n$$" + m.group(1).strip() + "$$\n", parts[i])
        parts[i] = _INLINE.sub(lambda m: "$" + m.group(1).strip() + "$", part)
    return "".join(parts)


class Filter:
    class Valves(BaseModel):
        context_tokens: int = Field(default=8192, description="the llama server's context per chat (CTX_SIZE)")
        answer_tokens: int = Field(default=2048, description="room kept for the answer (the preset's max_tokens)")
        margin_tokens: int = Field(default=256, description="chat template and estimate error")
        chars_per_token: float = Field(default=2.5, description="a cautious estimate")

    def __init__(self):
        self.valves = self.Valves()

    def _tokens(self, message: dict) -> int:
        content = message.get("content")
        if isinstance(content, list):  # multi-part content: count its text parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return int(len(str(content or "")) / self.valves.chars_per_token) + 8

    def inlet(self, body: dict, __user__: dict | None = None) -> dict:
        messages = body.get("messages") or []
        if not messages:
            return body
        v = self.valves
        answer = min(int(body.get("max_tokens") or v.answer_tokens), v.context_tokens // 2)
        budget = v.context_tokens - answer - v.margin_tokens
        system = [m for m in messages if m.get("role") == "system"]
        rest = [m for m in messages if m.get("role") != "system"]
        used = sum(self._tokens(m) for m in system)
        kept: list[dict] = []
        for m in reversed(rest):
            need = self._tokens(m)
            if used + need > budget:
                if not kept and isinstance(m.get("content"), str):  # the newest message alone is too long
                    room = max(64, int((budget - used) * v.chars_per_token))
                    text = m["content"]
                    m = {**m, "content": text[: room // 2] + "\n[...]\n" + text[-room // 2:]}
                    kept.append(m)
                break
            kept.append(m)
            used += need
        body["messages"] = system + kept[::-1]
        return body

    def outlet(self, body: dict, __user__: dict | None = None) -> dict:
        for m in body.get("messages") or []:
            if m.get("role") == "assistant" and isinstance(m.get("content"), str):
                m["content"] = dollar_math(m["content"])
        return body
