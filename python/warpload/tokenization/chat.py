"""Chat templates rendered with Jinja2 as transformers 5.24 renders them (utils/chat_template_utils.py), and
the tokenizer's apply_chat_template on top (ChatTemplates).

The same sandbox (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols), the same
globals (raise_exception, strftime_now, a dict() constructor, a namespace that refuses underscore
names), the JSON `tojson` filter, the `{% generation %}` tag, and the same input clean-up: message
keys whose value is None are dropped, everything the template sees is rebuilt from plain JSON types,
reasoning fields are aliased, and continue_final_message cuts the render after the final message.
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from typing import Any, Optional, Union

# Chat templates come from the Hub and are untrusted code: transformers refuses Jinja2 releases with known
# sandbox escapes (< 3.1.6), and so does this module.
MIN_JINJA = (3, 1, 6)
# The names a message's reasoning is passed under; the first is the one chat templates read.
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


@lru_cache
def compile_template(chat_template: str) -> Any:
    """The compiled Jinja2 template (cached per template text). Raises ImportError without jinja2 >= 3.1.6."""
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as err:
        raise ImportError("apply_chat_template requires jinja2 to be installed: `pip install jinja2`") from err
    if tuple(int(part) for part in re.findall(r"\d+", jinja2.__version__)[:3]) < MIN_JINJA:
        raise ImportError(f"apply_chat_template requires jinja2>=3.1.6 to be installed. Your version is "
                          f"{jinja2.__version__}. You can upgrade it with `pip install -U jinja2`.")

    class TemplateDict:
        """dict() for templates, without the attribute access that could reach Python internals."""

        def __call__(self, *args: Any, **kwargs: Any) -> dict:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
            return dict.fromkeys(*args, **kwargs)

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        # Jinja's own tojson escapes HTML characters, which a prompt must keep.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[_assistant_tracker(jinja2), jinja2.ext.loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    environment.globals["dict"] = TemplateDict()
    environment.globals["namespace"] = _template_namespace(jinja2)
    return environment.from_string(chat_template)


def _assistant_tracker(jinja2: Any) -> type:
    """The `{% generation %}` extension (built on first use: jinja2 is imported lazily)."""

    class AssistantTracker(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}`: renders its body, recording where it lands when tracking."""

        tags = {"generation"}

        def __init__(self, environment: Any) -> None:
            super().__init__(environment)
            environment.extend(activate_tracker=self.activate_tracker)
            self._tracking: ContextVar = ContextVar("assistant_tracker", default=None)

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

        @jinja2.pass_eval_context
        def _generation_support(self, context: Any, caller: Any) -> str:
            rendered = caller()
            tracking = self._tracking.get()
            if tracking is not None:
                blocks, indices = tracking
                start = len("".join(blocks))
                indices.append((start, start + len(rendered)))
            return rendered

        @contextmanager
        def activate_tracker(self, blocks: list, indices: list) -> Any:
            if self._tracking.get() is not None:
                raise ValueError("AssistantTracker should not be reused before closed")
            token = self._tracking.set((blocks, indices))
            try:
                yield
            finally:
                self._tracking.reset(token)

    return AssistantTracker


def _template_namespace(jinja2: Any) -> type:
    """namespace() for templates (built on first use: jinja2 is imported lazily)."""

    class TemplateNamespace(jinja2.utils.Namespace):
        """Jinja's namespace() refusing underscore-prefixed names (no route to dunder attributes)."""

        def __init__(*args: Any, **kwargs: Any) -> None:
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace.check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            TemplateNamespace.check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def check_name(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}. "
                    "Please rename the attribute.")

    return TemplateNamespace


def message_dicts(value: Any) -> Any:
    """Message objects (dataclasses, pydantic models) and what they hold as dicts and lists; the rest unchanged."""
    if isinstance(value, Mapping):
        return {key: message_dicts(item) for key, item in value.items()}
    if isinstance(value, list):
        return [message_dicts(item) for item in value]
    if isinstance(value, tuple):
        return tuple(message_dicts(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: message_dicts(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return message_dicts(value.model_dump())
    return value


def normalize_messages(conversation: Any) -> list[dict]:
    """A conversation as a list of dicts without the keys whose value is None (templates render those as 'None')."""
    messages = message_dicts(getattr(conversation, "messages", conversation))
    for message in messages:
        if not isinstance(message, dict):
            raise TypeError(f"Chat messages should be dicts, dataclasses or pydantic models, but got {message!r}.")
    return [{key: value for key, value in message.items() if value is not None} for message in messages]


def plain_data(value: Any) -> Any:
    """`value` rebuilt from exact JSON types; other objects become a placeholder naming their type ("<ndarray>"),
    so the sandbox never sees an object whose methods it does not know to be dangerous."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {plain_data(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(plain_data(item) for item in value)
    if type(value).__module__ == "numpy" and callable(getattr(value, "item", None)):
        return plain_data(value.item())  # numpy scalars: np.bool_(False) must stay falsy
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain_data(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return plain_data(value.model_dump())
    return f"<{type(value).__name__}>"


def _alias_reasoning(chat: list) -> list:
    aliased = []
    for message in chat:
        if isinstance(message, dict):
            reasoning = next((message[key] for key in REASONING_FIELDS if message.get(key) is not None), None)
            if reasoning is not None:
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        aliased.append(message)
    return aliased


def render_chats(conversations: list[list[dict]], chat_template: str, *, tools: Optional[list] = None,
                 documents: Optional[list] = None, add_generation_prompt: bool = False,
                 continue_final_message: Union[bool, str] = False, track_generation: bool = False,
                 **template_kwargs: Any) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """(rendered text of each conversation, the character spans of its `{% generation %}` blocks when tracked).

    Tools must be JSON schemas (dicts). Raises ValueError / TypeError with transformers' messages, and
    jinja2.TemplateError for what the template raises.
    """
    compiled = compile_template(chat_template)
    if tools is not None and not all(isinstance(tool, dict) for tool in tools):
        raise ValueError("Tools should be JSON schemas (dicts); warpload does not convert Python functions to "
                         "schemas: pass transformers.utils.get_json_schema(function) for each")
    if documents is not None and not all(isinstance(document, dict) for document in documents):
        raise TypeError("Documents should be a list of dicts with 'title' and 'text' keys!")
    tools, documents, template_kwargs = plain_data(tools), plain_data(documents), plain_data(template_kwargs)
    rendered, spans = [], []
    for chat in conversations:
        chat = _alias_reasoning(plain_data(getattr(chat, "messages", chat)))
        final_message, field_name = None, None
        if continue_final_message:
            field_name = continue_final_message if isinstance(continue_final_message, str) else "content"
            final_message = _tag_final_message(chat, field_name, chat_template)
        variables = dict(messages=chat, tools=tools, documents=documents, add_generation_prompt=add_generation_prompt,
                         **template_kwargs)
        if track_generation:
            blocks: list[str] = []
            indices: list[tuple[int, int]] = []
            with compiled.environment.activate_tracker(blocks, indices):
                for block in compiled.generate(**variables):
                    blocks.append(block)
                text = "".join(blocks)
            spans.append(indices)
        else:
            text = compiled.render(**variables)
        if final_message is not None:
            text = _cut_after_final_message(text, final_message)
        rendered.append(text)
    return rendered, spans


def _tag_final_message(chat: list, field_name: str, chat_template: str) -> str:
    """Appends CONTINUE_TAG to the final message's text; returns that text (before the tag)."""
    if not chat:
        raise ValueError("continue_final_message is set but the conversation is empty!")
    final_message = chat[-1].get(field_name)
    if final_message is None:
        raise ValueError(f'continue_final_message is set but the final message has no "{field_name}" to continue!')
    fields = [field_name]
    if field_name in REASONING_FIELDS:
        fields = [name for name in REASONING_FIELDS if chat[-1].get(name) == final_message]
    if not any(name in chat_template for name in fields):
        raise ValueError(f'continue_final_message is set to "{field_name}" but this is not an accepted field in the '
                         "chat_template")
    if isinstance(final_message, (list, tuple)):
        for block in reversed(final_message):
            if "text" in block:
                final_message = block["text"]
                block["text"] = block["text"] + CONTINUE_TAG
                return final_message
        raise ValueError("continue_final_message is set but we could not find any text to continue in the final "
                         "message!")
    for name in fields:
        chat[-1][name] = chat[-1][name] + CONTINUE_TAG
    return final_message


def _cut_after_final_message(text: str, final_message: str) -> str:
    if final_message.strip() not in text or CONTINUE_TAG.strip() not in text:
        raise ValueError("continue_final_message is set but the final message does not appear in the chat after "
                         "applying the chat template! This can happen if the chat template deletes portions of the "
                         "final message. Please verify the chat template and final message in your chat to ensure "
                         f"they are compatible.Final message to continue: {final_message.strip()}\nRendered chat:\n"
                         f"{text}")
    at = text.rindex(CONTINUE_TAG.strip())
    if text[at:at + len(CONTINUE_TAG)] == CONTINUE_TAG:
        return text[:at]
    return text[:at].rstrip()


class ChatTemplates:
    """apply_chat_template and get_chat_template of FastTokenizer, which sets `chat_template` and
    `special_tokens_map` and encodes the rendered text with its __call__."""

    chat_template: Union[None, str, dict[str, str]]
    special_tokens_map: dict[str, str]

    def get_chat_template(self, chat_template: Optional[str] = None, tools: Optional[list] = None) -> str:
        """The template apply_chat_template uses: the given one (or the name of one), else the tokenizer's."""
        if isinstance(self.chat_template, dict):
            templates = self.chat_template
            if chat_template is not None and chat_template in templates:
                return templates[chat_template]
            if chat_template is None:
                if tools is not None and "tool_use" in templates:
                    return templates["tool_use"]
                if "default" in templates:
                    return templates["default"]
                raise ValueError("This model has multiple chat templates with no default specified! Please either "
                                 "pass a chat template or the name of the template you wish to use to the "
                                 f"`chat_template` argument. Available template names are {sorted(templates)}.")
        elif chat_template is None:
            if self.chat_template is None:
                raise ValueError("Cannot use chat template functions because tokenizer.chat_template is not set and "
                                 "no template argument was passed! For information about writing templates and "
                                 "setting the tokenizer.chat_template attribute, please see the documentation at "
                                 "https://huggingface.co/docs/transformers/main/en/chat_templating")
            return self.chat_template
        return chat_template

    def apply_chat_template(self, conversation: Any, tools: Optional[list] = None, documents: Optional[list] = None,
                            chat_template: Optional[str] = None, add_generation_prompt: bool = False,
                            continue_final_message: Union[bool, str] = False, tokenize: bool = True,
                            padding: Any = False, truncation: bool = False, max_length: Optional[int] = None,
                            return_tensors: Optional[str] = None, return_dict: bool = True,
                            return_assistant_tokens_mask: bool = False,
                            tokenizer_kwargs: Optional[dict[str, Any]] = None, **kwargs: Any) -> Any:
        """Renders a conversation (or a batch) with the chat template as transformers 5 does; with tokenize=True
        (the default) encodes it without adding special tokens: a BatchEncoding (return_dict=True, the default) or
        the input ids. Other keywords reach the template. Raises ValueError as transformers does."""
        if not tokenize:
            return_dict = False
        if return_assistant_tokens_mask and not (return_dict and tokenize):
            raise ValueError("`return_assistant_tokens_mask=True` requires `return_dict=True` and `tokenize=True`")
        if kwargs.pop("sanitize_control_tokens", False):
            raise NotImplementedError("sanitize_control_tokens=True is not implemented by warpload; use "
                                      "transformers' tokenizer for it")
        template = self.get_chat_template(chat_template, tools)
        if isinstance(conversation, (list, tuple)) and len(conversation) == 0:
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        batched = isinstance(conversation, (list, tuple)) and (
            isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages"))
        conversations = [normalize_messages(chat) for chat in (conversation if batched else [conversation])]
        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt are not compatible. Use "
                             "continue_final_message when you want the model to continue the final message, and "
                             "add_generation_prompt when you want to add a header that will prompt it to start a new "
                             "assistant message instead.")
        if continue_final_message and return_assistant_tokens_mask:
            raise ValueError("continue_final_message is not compatible with return_assistant_tokens_mask.")
        rendered, spans = render_chats(conversations, template, tools=tools, documents=documents,
                                       add_generation_prompt=add_generation_prompt,
                                       continue_final_message=continue_final_message,
                                       track_generation=return_assistant_tokens_mask,
                                       **{**self.special_tokens_map, **kwargs})
        text = rendered if batched else rendered[0]
        if not tokenize:
            return text
        out = self(text, padding=padding, truncation=truncation, max_length=max_length, add_special_tokens=False,
                   return_tensors=return_tensors, **(tokenizer_kwargs or {}))
        if not return_dict:
            return out["input_ids"]
        if return_assistant_tokens_mask:
            masks = [_assistant_mask(encoding.offsets, len(encoding.ids), chat_spans)
                     for encoding, chat_spans in zip(out.encodings, spans)]
            out["assistant_masks"] = masks if batched or return_tensors else masks[0]
            out.convert_to_tensors(return_tensors)
        return out


def _assistant_mask(offsets: list[tuple[int, int]], length: int, spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token that overlaps a `{% generation %}` span (spans and offsets are both in order)."""
    mask = [0] * length
    span = 0
    for index, (start, end) in enumerate(offsets):
        while span < len(spans) and start >= spans[span][1]:
            span += 1
        if span == len(spans):
            break
        if end > spans[span][0]:
            mask[index] = 1
    return mask
