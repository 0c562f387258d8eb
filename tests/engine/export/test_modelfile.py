"""The Modelfile's text: what Ollama's parser can and cannot quote, and names it accepts."""
from __future__ import annotations

import pytest

from engine.export import families, modelfile


def test_multi_line_values_are_triple_quoted_and_each_directive_is_on_its_own_line():
    text = modelfile.render(base="qwen3:8b", adapter="./adapter.gguf", system="You are Ada.\nBe brief.",
                            template=families.QWEN3, stop="<|im_end|>")
    lines = text.splitlines()
    assert "FROM qwen3:8b" in lines and "ADAPTER ./adapter.gguf" in lines
    assert 'SYSTEM """You are Ada.\nBe brief."""' in text
    assert f'TEMPLATE """{families.QWEN3}"""' in text
    assert lines[-1] == 'PARAMETER stop "<|im_end|>"'


def test_a_system_prompt_holding_three_quotes_is_refused_saying_why():
    with pytest.raises(ValueError, match="SYSTEM text holds three double quotes"):
        modelfile.render(base="b", adapter="./a", system='say """hi"""', template="t", stop="s")


def test_no_system_prompt_writes_no_system_line():
    assert "SYSTEM" not in modelfile.render(base="b", adapter="./a", system=None, template="t", stop="s")


@pytest.mark.parametrize("persona,slug", [("Grace Hopper", "grace-hopper"), ("Zoë O'Neil", "zo-o-neil"),
                                          ("!!!", "persona")])
def test_persona_names_become_names_ollama_accepts(persona, slug):
    assert modelfile.slug(persona) == slug
    assert modelfile.NAME.match(f"lorapod-{slug}:20261129-120000-ab12")
