"""Caller prompts: trimmed, bounded in number and length, never empty."""

from __future__ import annotations

import pytest

from service.config import Settings
from service.exceptions import InvalidPrompt, TooManyPrompts
from service.serving.prompting import validate_prompts

SETTINGS = Settings(triton_url="fake:0", text_max_prompts=2, text_max_prompt_chars=5)


def test_prompts_are_trimmed_and_kept_in_order() -> None:
    assert validate_prompts([" abc ", "de"], SETTINGS) == ("abc", "de")
    assert validate_prompts([], SETTINGS) == ()


@pytest.mark.parametrize(
    ("prompts", "error"),
    [
        (["a", "b", "c"], TooManyPrompts),
        (["abcdef"], InvalidPrompt),
        (["", "a"], InvalidPrompt),
        (["a", " \t\n"], InvalidPrompt),
    ],
)
def test_each_limit_has_its_error(prompts: list[str], error: type[Exception]) -> None:
    with pytest.raises(error):
        validate_prompts(prompts, SETTINGS)
