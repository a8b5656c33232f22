"""Chat messages -> the text a causal LM is trained on: a prompt string and response strings.

Datasets such as UltraFeedback-binarized store a conversation as a list of messages
``[{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]``. A preference pair becomes
``{prompt, chosen, rejected}`` text as follows:

- the context is every message before the final assistant message (chosen and rejected must share it); a row
  whose chosen/rejected hold only the assistant message takes its context from ``prompt`` (a string becomes one
  user message);
- the prompt is the context rendered **with the tokenizer's chat template** when it has one
  (``tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)``), and the response
  is the final assistant message's ``content`` as is (the training code appends the tokenizer's EOS);
- otherwise (no tokenizer bound, a tokenizer without ``chat_template``, or ``template="plain"``) the prompt is
  the **plain template** (the Anthropic HH layout, with "User" for the human)::

      System: {content}\n\n          (only if there is a system message)
      User: {content}\n\nAssistant: {content}\n\nUser: {content}\n\nAssistant:

  i.e. the messages as ``"{Role}: {content}"`` joined by a blank line, followed by ``"\n\nAssistant:"``;
  the response is ``" " + content`` (one space after the colon, as in HH-RLHF; no space is added when the
  content is empty or already starts with whitespace).
"""
from __future__ import annotations

from alignlab.errors import ConfigError

TEMPLATES = ("auto", "plain", "tokenizer")
PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
PLAIN_GENERATION_PROMPT = "\n\nAssistant:"


def is_messages(value) -> bool:
    """A list of {role, content} dicts (what a chat column holds)."""
    return isinstance(value, (list, tuple)) and all(isinstance(m, dict) for m in value)


def check_messages(messages, column: str) -> list[dict]:
    """Raises ValueError (a bad-row problem) unless every message has a known role and text content."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{column!r} is an empty message list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"{column!r} message {i} is not a {{'role': str, 'content': str}} dict")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def render_plain(messages: list[dict]) -> str:
    """The plain template's prompt for `messages` (ends with "\\n\\nAssistant:")."""
    parts = [f"{PLAIN_ROLES.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + PLAIN_GENERATION_PROMPT


class ChatRenderer:
    """Renders contexts and responses as text; `template` is "auto" (the tokenizer's chat template when it has
    one, else plain), "plain" (always plain), or "tokenizer" (the tokenizer must have a chat template)."""

    def __init__(self, tokenizer=None, template: str = "auto", key: str = "data.source.template"):
        if template not in TEMPLATES:
            raise ConfigError(f"{key}={template!r} is not one of {TEMPLATES}")
        has_template = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
        if template == "tokenizer" and tokenizer is not None and not has_template:
            raise ConfigError(f"{key}=tokenizer but the tokenizer ({getattr(tokenizer, 'name_or_path', '?')}) "
                              "has no chat_template; use template=auto or plain")
        self.tokenizer, self.template = tokenizer, template
        self.uses_chat_template = has_template and template != "plain"

    def prompt(self, context: list[dict]) -> str:
        if not self.uses_chat_template:
            return render_plain(context)
        try:
            text = self.tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # jinja raises TemplateError (e.g. "roles must alternate")
            raise ValueError(f"the tokenizer's chat template failed: {type(err).__name__}: {err}") from err
        return text if isinstance(text, str) else text[0]

    def response(self, content: str) -> str:
        if self.uses_chat_template or not content or content[0].isspace():
            return content
        return " " + content

    def text(self, messages: list[dict]) -> str:
        """A whole conversation ending with an assistant message, as prompt + response text."""
        return self.prompt(messages[:-1]) + self.response(messages[-1]["content"])


def _final_response(value, column: str) -> tuple[list[dict], str]:
    """(context before the final assistant message, its content) of a message list or a plain string."""
    if isinstance(value, str):
        return [], value
    messages = check_messages(value, column)
    if messages[-1]["role"] != "assistant":
        raise ValueError(f"{column!r} does not end with an assistant message")
    return messages[:-1], messages[-1]["content"]


def pair_from_messages(prompt, chosen, rejected, renderer: ChatRenderer) -> dict:
    """{prompt, chosen, rejected} text from fields that are strings or message lists (see the module doc).
    Raises ValueError naming the problem for a malformed row."""
    for column, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        if value is None:
            raise ValueError(f"missing {column!r}")
        if not isinstance(value, str) and not is_messages(value):
            raise ValueError(f"{column!r} is a {type(value).__name__}, expected text or a message list")
    context_c, chosen_text = _final_response(chosen, "chosen")
    context_r, rejected_text = _final_response(rejected, "rejected")
    if context_c and context_r and context_c != context_r:
        raise ValueError("'chosen' and 'rejected' differ before their final assistant message")
    context = context_c or context_r
    if not context:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("no prompt: 'prompt' is empty and the responses carry no context")
            context = [{"role": "user", "content": prompt}]
        else:
            context = check_messages(prompt, "prompt")
    return {"prompt": renderer.prompt(context), "chosen": renderer.response(chosen_text),
            "rejected": renderer.response(rejected_text)}
