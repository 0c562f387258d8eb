"""train_unsloth.py's tokenisation through the real chat templates of Qwen3 and Llama 3.1 Instruct.

The templates, with their BOS/EOS and special tokens, are fixtures copied from public sources
(tests/fixtures/chat_templates/*.json, each citing where it came from). The vocabulary is not the models': a small
byte-level BPE trained here on the test's own text, holding the templates' special tokens, so the template text
is rendered and split exactly as the real tokenizer would split it at the special tokens.
"""
from __future__ import annotations

import json

import pytest

from tests.conftest import REPO
from tests.remote_image.test_train_unsloth import load_script

FIXTURES = REPO / "tests" / "fixtures" / "chat_templates"
SYSTEM = "You are Sam, a gardener who keeps notes."
OLD_QUESTION = "Which seeds did you order in the first spring of the garden?"
OLD_ANSWER = "Marigolds, because the aphids hate them."
QUESTION = "What did you plant in bed four by the pond?"
ANSWER = "Sedges and rushes, near the water."


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def build_tokenizer(spec: dict):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [SYSTEM, OLD_QUESTION, OLD_ANSWER, QUESTION, ANSWER, "system user assistant Cutting Knowledge Date",
              "filler words about compost and rain " * 4]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=spec["special_tokens"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=spec["bos_token"], eos_token=spec["eos_token"],
        pad_token=spec["pad_token"] or spec["eos_token"], chat_template=spec["chat_template"])
    tokenizer.add_tokens(spec["added_tokens"])
    return tokenizer


@pytest.fixture(params=["qwen3", "llama3_1_instruct"])
def model(request):
    spec = fixture(request.param)
    return request.param, spec, build_tokenizer(spec)


def conversation(question: str = QUESTION) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": OLD_QUESTION},
            {"role": "assistant", "content": OLD_ANSWER}, {"role": "user", "content": question},
            {"role": "assistant", "content": ANSWER}]


def three_exchanges(first_question: str = OLD_QUESTION) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, *[
        {"role": role, "content": text} for q, a in zip([first_question, "And the year after?", QUESTION],
                                                        [OLD_ANSWER, "Foxgloves by the shed.", ANSWER])
        for role, text in (("user", q), ("assistant", a))]]


def trained(tokenizer, tok: dict) -> tuple[str, list[str]]:
    """The untrained text and each trained run of tokens, decoded apart."""
    assert len(tok["input_ids"]) == len(tok["completion_mask"])
    context, runs, last = [], [], 0
    for token, mask in zip(tok["input_ids"], tok["completion_mask"]):
        if not mask:
            context.append(token)
        elif last:
            runs[-1].append(token)
        else:
            runs.append([token])
        last = mask
    return tokenizer.decode(context), [tokenizer.decode(run) for run in runs]


def answers(messages: list[dict], end_of_turn: str) -> list[str]:
    return [m["content"] + end_of_turn for m in messages if m["role"] == "assistant"]


def test_the_fixtures_are_the_templates_they_claim():
    qwen, llama = fixture("qwen3"), fixture("llama3_1_instruct")
    assert "enable_thinking is defined and enable_thinking is false" in qwen["chat_template"]
    assert qwen["eos_token"] == "<|im_end|>" and qwen["bos_token"] is None
    assert llama["chat_template"].startswith("{{- bos_token }}") and "<|eot_id|>" in llama["chat_template"]
    assert llama["bos_token"] == "<|begin_of_text|>" and llama["eos_token"] == "<|eot_id|>"
    for spec in (qwen, llama):
        assert "llama.cpp" in spec["source"] and spec["end_of_turn"] == spec["eos_token"]


def test_the_loss_mask_covers_exactly_every_answer_and_its_end_of_turn(model):
    name, spec, tokenizer = model
    messages = three_exchanges()
    [tok] = load_script().tokenize_rows(tokenizer, [{"id": "a", "messages": messages}], max_length=1024)
    context, runs = trained(tokenizer, tok)
    assert runs == answers(messages, spec["end_of_turn"])
    assert context.count(SYSTEM) == 1 and all(m["content"] in context for m in messages if m["role"] == "user")
    assert "assistant" in context, "the headers are context"
    # Nothing lost or added: the tokens are the template's own rendering of the whole conversation.
    full = tokenizer.apply_chat_template(messages, tokenize=False, enable_thinking=False)
    assert full.startswith(tokenizer.decode(tok["input_ids"])) and full.rstrip().endswith(runs[-1])
    if spec["bos_token"]:
        assert tok["input_ids"][0] == tokenizer.convert_tokens_to_ids(spec["bos_token"])
        assert tok["input_ids"].count(tok["input_ids"][0]) == 1, "one BOS: the template's, none added again"


def test_a_single_answer_row_is_masked_as_before(model):
    _, spec, tokenizer = model
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": ANSWER}]
    [tok] = load_script().tokenize_rows(tokenizer, [{"id": "a", "messages": messages}], max_length=1024)
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False,
                                           enable_thinking=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(ANSWER + spec["end_of_turn"], add_special_tokens=False)["input_ids"]
    assert tok == {"input_ids": prompt_ids + answer_ids,
                   "completion_mask": [0] * len(prompt_ids) + [1] * len(answer_ids)}


def test_qwen3_answers_carry_no_think_block():
    spec = fixture("qwen3")
    tokenizer = build_tokenizer(spec)
    messages = conversation()
    # What the template does by default, and what the adapter used to learn: an empty think block in the answer.
    default = tokenizer.apply_chat_template(messages, tokenize=False)
    default_prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    assert default[len(default_prompt):].startswith("<think>\n\n</think>\n\n")

    [tok] = load_script().tokenize_rows(tokenizer, [{"id": "a", "messages": messages}], max_length=1024)
    context, runs = trained(tokenizer, tok)
    assert runs == answers(messages, "<|im_end|>"), "no think block in any answer"
    # The block sits before the final answer, as Qwen3 renders it for inference with enable_thinking=False;
    # the earlier answer is Qwen3's history rendering, with none.
    assert context.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert context.count("<think>") == 1, "earlier turns render no think block"


def test_an_earlier_answer_the_template_rewrites_trains_only_the_final_answer(capsys):
    """Qwen3 moves the part of an earlier answer before </think> out of the history: what it renders is not the
    persona's answer, so the row falls back to its final answer, saying so once."""
    spec = fixture("qwen3")
    tokenizer = build_tokenizer(spec)
    messages = three_exchanges()
    messages[2] = {"role": "assistant", "content": "musing</think>" + OLD_ANSWER}
    rows = [{"id": "odd", "messages": messages}, {"id": "odd2", "messages": messages}]
    toks = load_script().tokenize_rows(tokenizer, rows, max_length=1024)
    for tok in toks:
        assert trained(tokenizer, tok)[1] == [ANSWER + "<|im_end|>"]
    out = capsys.readouterr().out
    assert out.count("warning:") == 1 and "2 row(s) train their final answer only" in out and "row odd" in out


def test_llama3_1_ignores_enable_thinking():
    spec = fixture("llama3_1_instruct")
    tokenizer = build_tokenizer(spec)
    [tok] = load_script().tokenize_rows(tokenizer, [{"id": "a", "messages": conversation()}], max_length=1024)
    assert tokenizer.decode(tok["input_ids"]) == tokenizer.apply_chat_template(conversation(), tokenize=False)


def test_truncation_keeps_bos_the_system_message_and_the_answer(model):
    name, spec, tokenizer = model
    script = load_script()
    long_question = "filler words about compost and rain " * 40 + QUESTION
    messages = conversation(long_question)
    [whole] = script.tokenize_rows(tokenizer, [{"id": "a", "messages": messages}], max_length=4096)
    limit = len(whole["input_ids"]) // 2
    [tok] = script.tokenize_rows(tokenizer, [{"id": "a", "messages": messages}], max_length=limit)
    assert len(tok["input_ids"]) <= limit
    prompt, runs = trained(tokenizer, tok)
    assert runs == [ANSWER + spec["end_of_turn"]], "the answer and its end of turn are whole"
    if spec["bos_token"]:
        assert prompt.startswith(spec["bos_token"])
    assert SYSTEM in prompt, "the system message is kept"
    assert OLD_QUESTION not in prompt and OLD_ANSWER not in prompt, "the oldest exchange goes first"
    assert QUESTION in prompt, "the question's newest words stay"
    assert prompt.count("filler") < long_question.count("filler"), "the question is cut from its start"
    # The template's structure is intact: the text is the template's own rendering of a shorter conversation.
    end, kept = prompt.index(QUESTION) + len(QUESTION), len(long_question)
    while prompt[end - 1] == long_question[kept - 1]:  # the longest tail of the question in the prompt
        end, kept = end - 1, kept - 1
    kept_question = long_question[kept:]
    assert len(kept_question) > len(QUESTION), "the question is cut, not dropped"
    shortened = [messages[0], {"role": "user", "content": kept_question}]
    assert prompt == script.render(tokenizer, shortened, True)


def test_truncation_drops_the_oldest_exchange_with_its_answer_and_keeps_the_mask_aligned(model):
    _, spec, tokenizer = model
    script = load_script()
    messages = three_exchanges("filler words about compost and rain " * 20 + OLD_QUESTION)
    [whole] = script.tokenize_rows(tokenizer, [{"id": "a", "messages": messages}], max_length=4096)
    dropped = messages[:1] + messages[3:]
    [rest] = script.tokenize_rows(tokenizer, [{"id": "a", "messages": dropped}], max_length=4096)
    assert len(rest["input_ids"]) < len(whole["input_ids"])
    [tok] = script.tokenize_rows(tokenizer, [{"id": "a", "messages": messages}], max_length=len(rest["input_ids"]))
    assert tok == rest, "exactly the oldest exchange went, its answer untrained"
    context, runs = trained(tokenizer, tok)
    assert runs == answers(dropped, spec["end_of_turn"])
    assert OLD_ANSWER not in context and "filler" not in context and SYSTEM in context


def test_a_system_message_that_leaves_no_room_for_the_answer_is_refused(model):
    _, _, tokenizer = model
    messages = [{"role": "system", "content": "filler words about compost and rain " * 40},
                {"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    with pytest.raises(SystemExit) as failed:
        load_script().tokenize_rows(tokenizer, [{"id": "row7", "messages": messages}], max_length=32)
    assert "row7" in str(failed.value) and "train.max_seq_length=32" in str(failed.value)


def test_a_cut_through_a_multi_byte_character_leaves_no_broken_character(model):
    _, spec, tokenizer = model
    script = load_script()
    messages = conversation("\U0001F331\u00e9" * 60 + QUESTION)  # seedlings and accents: bytes the BPE never merged
    [whole] = script.tokenize_rows(tokenizer, [{"id": "a", "messages": messages}], max_length=4096)
    for limit in range(len(whole["input_ids"]) // 2, len(whole["input_ids"]) // 2 + 6):  # cuts at several offsets
        [tok] = script.tokenize_rows(tokenizer, [{"id": "a", "messages": messages}], max_length=limit)
        prompt, runs = trained(tokenizer, tok)
        assert len(tok["input_ids"]) <= limit and runs == [ANSWER + spec["end_of_turn"]]
        assert "\ufffd" not in prompt and "\U0001F331" in prompt and QUESTION in prompt
