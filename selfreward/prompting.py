"""Prompt text in one place: chat formatting and sandboxed rubric rendering."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import selfreward.prompts
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from selfreward.records import PromptFormat

# the top-level prompts/ folder ships as the package selfreward.prompts (see pyproject's package-dir)
PROMPTS_DIR = Path(next(iter(selfreward.prompts.__path__)))


def template_path(name: str) -> Path:
    """A rubric file: an existing path as given, else a file of the packaged prompts/."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    packaged = PROMPTS_DIR / name
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(f"judge template {name!r} not found (neither a file nor one of {PROMPTS_DIR})")


@lru_cache(maxsize=16)
def _template(path: str):
    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False)
    return env.from_string(Path(path).read_text(encoding="utf-8"))


def render_judge(template: str, prompt: str, response: str) -> str:
    """The judge prompt for one candidate; the sandbox keeps templates from reaching Python."""
    return _template(str(template_path(template))).render(prompt=prompt, response=response).strip()


def cut(text: str, stops) -> str:
    """The response up to the first stop string (base models run on past their answer)."""
    for stop in stops:
        text = text.split(stop, 1)[0]
    return text


def render_pairwise(template: str, prompt: str, first: str, second: str) -> str:
    """The judge prompt comparing two candidates of one prompt (a pairwise rubric with `first` and `second`)."""
    return _template(str(template_path(template))).render(prompt=prompt, first=first, second=second).strip()


def chat(tokenizer, text: str, fmt: PromptFormat | None = None) -> str:
    """The model input for a user message written in `fmt` (its system prompt and few-shot text; none by default):
    the chat template if the tokenizer has one, else plain text after the BOS token (inputs are tokenised without
    special tokens everywhere, so it is written here, as templates do)."""
    system, few_shot = (fmt.system, fmt.few_shot) if fmt else (None, None)
    if few_shot:  # put before the prompt, or around it where it has a {prompt} slot
        text = few_shot.replace("{prompt}", text) if "{prompt}" in few_shot else few_shot + text
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    return bos + text if bos and not text.startswith(bos) else text
