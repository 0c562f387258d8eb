"""Clean one text field: what a model wrote to itself is not what the persona said.

MetaHuman OS stores replies from reasoning models verbatim, so they carry <think> blocks and ReAct-style
"Thought: ... Final Answer: ..." scaffolding; training on those would teach the adapter to narrate its
reasoning. Whitespace is normalised (paragraph breaks kept) and long fields are cut at a word limit,
preferably at the end of a sentence: one audit of MetaHuman's own data found answers from 1 to 5000+ words.
"""
from __future__ import annotations

import re

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S | re.I)
_THINK_END = re.compile(r"</think>", re.I)
_THINK_START = re.compile(r"<think>", re.I)
_FINAL_ANSWER = re.compile(r"\bfinal\s+answer\s*:", re.I)
_LEADING_LABEL = re.compile(r"^(?:(?:final\s+)?answer|response|output|assistant)\s*:\s*", re.I)
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")


def clean(text: str, max_words: int) -> str:
    """The text without reasoning scaffolding, whitespace normalised, at most max_words words ("" if none left)."""
    if "<" in text:
        text = _strip_think(text)
    if ":" in text:
        text = _strip_markers(text)
    text = _normalise_space(text)
    return _limit_words(text, max_words)


def _strip_think(text: str) -> str:
    text = _THINK_BLOCK.sub("", text)
    ends = list(_THINK_END.finditer(text))
    if ends:  # the opening tag was cut off (or never written): the reasoning is everything before
        text = text[ends[-1].end():]
    start = _THINK_START.search(text)
    if start:  # reasoning that never closed (a truncated generation): only what came before is an answer
        text = text[:start.start()]
    return text


def _strip_markers(text: str) -> str:
    finals = list(_FINAL_ANSWER.finditer(text))
    if finals:
        text = text[finals[-1].end():]
    return _LEADING_LABEL.sub("", text.lstrip())


def _normalise_space(text: str) -> str:
    if "\n" not in text:
        return " ".join(text.split())
    paragraphs = (" ".join(p.split()) for p in _PARAGRAPH_BREAK.split(text))
    return "\n\n".join(p for p in paragraphs if p)


def _limit_words(text: str, max_words: int) -> str:
    if text.count(" ") + text.count("\n") < max_words:  # cheap upper bound on the word count
        return text
    words = list(_WORD.finditer(text))
    if len(words) <= max_words:
        return text
    head = text[:words[max_words - 1].end()]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    # Ending on a whole sentence reads better than a mid-sentence cut, unless it throws away half the text.
    if ends and ends[-1] >= len(head) // 2:
        head = head[:ends[-1]]
    return head
