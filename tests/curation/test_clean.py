"""curation.clean: reasoning scaffolding out, whitespace normalised, long fields cut at a sentence."""
from curation.clean import clean


def test_think_blocks_are_removed_wherever_they_are():
    assert clean("<think>plan the answer</think>I went to the river.", 100) == "I went to the river."
    assert clean("Before. <THINK>\nmulti\nline\n</think> After.", 100) == "Before. After."
    assert clean("a<think>x</think>b<think>y</think>c", 100) == "abc"


def test_an_unclosed_or_unopened_think_keeps_only_the_answer_side():
    assert clean("reasoning that lost its opening tag</think>The answer.", 100) == "The answer."
    assert clean("The answer. <think>and a generation cut off mid-thought", 100) == "The answer."
    assert clean("<think>only reasoning, never an answer</think>", 100) == ""


def test_final_answer_markers_leave_only_the_answer():
    assert clean("Thought: I should recall the hike.\nFinal Answer: We hiked the ridge.", 100) == "We hiked the ridge."
    assert clean("Answer: It rained all day.", 100) == "It rained all day."
    assert clean("response:   fine, thanks", 100) == "fine, thanks"
    assert clean("My answer: no.", 100) == "My answer: no."  # only a leading label is scaffolding


def test_whitespace_is_normalised_but_paragraphs_survive():
    assert clean("  one   two\tthree  ", 100) == "one two three"
    assert clean("first line\nsame paragraph\n\n\n   second   paragraph  \n", 100) == \
        "first line same paragraph\n\nsecond paragraph"
    assert clean(" \n\t ", 100) == ""


def test_long_text_is_cut_at_the_limit_preferably_at_a_sentence_end():
    text = "One two three. Four five six seven eight nine ten eleven twelve."
    assert clean(text, 20) == text
    assert clean(text, 10) == "One two three. Four five six seven eight nine ten"  # the sentence end is too early
    sentences = "Alpha beta gamma delta. Epsilon zeta eta theta. Iota kappa lambda mu."
    assert clean(sentences, 10) == "Alpha beta gamma delta. Epsilon zeta eta theta."
    assert len(clean("word " * 500, 160).split()) == 160
