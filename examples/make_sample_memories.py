#!/usr/bin/env python3
"""Write the bundled sample: synthetic episodic memories of "Sam Rivera" in MetaHuman OS's format.

    python examples/make_sample_memories.py [out_dir] [--count N]

Deterministic (fixed seed), so the committed files are reproducible. Both on-disk layouts appear: the
older memory/episodic/YYYY/<id>-<slug>.json and the per-user profiles/sam/memory/episodic/<category>/YYYY/MM/DD/.
A few memories are the kind curation must drop (no consent, too short, untagged), as in a real tree.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

PEOPLE = ["Ana", "Marcus", "Priya", "Dr. Okafor", "Lena", "Tom", "Juniper"]
PLACES = ["the river trail", "the community garden", "the studio", "the farmers market", "the old library",
          "the ferry terminal", "the hill above town"]
TOPICS = ["the rain garden design", "a native meadow planting", "the bioswale permit", "my piano practice",
          "the half marathon training", "Ana's new apartment", "composting at the garden", "the bridge park bid",
          "learning to draw trees", "the city council hearing"]
FEELINGS = ["calm", "restless", "proud", "tired but happy", "a little anxious", "grateful", "curious"]
QUESTIONS = [
    ("How did {topic} go today?", "It went better than I expected. {detail} I felt {feeling} afterwards."),
    ("What's on your mind about {topic}?", "Mostly the details. {detail} I keep thinking it through on walks."),
    ("Do you want to talk about {topic}?", "Sure. {detail} Talking it out helps me see what matters."),
    ("Any plans for the weekend?", "I want to spend time at {place}. {detail} Juniper will come along."),
    ("How are you feeling about {topic}?", "Honestly, {feeling}. {detail} One step at a time."),
    ("What did {person} say?", "{person} was encouraging. {detail} It meant a lot to hear that."),
]
DETAILS = [
    "We sketched three options and picked the one with the most shade.",
    "The soil test came back with more clay than we hoped.",
    "I practiced the Chopin nocturne slowly, hands apart.",
    "I ran eight miles along {place} at an easy pace.",
    "{person} suggested we use more sedges near the water.",
    "The drawings are due Friday, so I blocked out the mornings.",
    "I noticed the swallows are back near {place}.",
    "We argued about budget, then found a cheaper stone.",
]
OBSERVATIONS = [
    "Met with {person} about {topic} at {place}. {detail}",
    "Spent the afternoon at {place} working on {topic}. {detail}",
    "Walked Juniper past {place} and thought about {topic}. {detail}",
]
REFLECTIONS = [
    "Looking back on {topic}, I notice I do my best work when I slow down. {detail}",
    "I have been {feeling} lately. Maybe it is {topic}. {detail} I want to be kinder to myself about it.",
    "A pattern: every time {person} and I plan something together, it turns out well. {detail}",
]
DREAMS = [
    "I dreamt {place} was flooded and I was planting reeds from a rowboat while {person} played piano.",
    "In the dream the library shelves were full of seeds instead of books, and I was {feeling}.",
]
JOURNALS = ["Today: {topic}. {detail} Feeling {feeling}.", "Short entry. {detail} Tomorrow, more of {topic}."]


def fill(template: str, rng: random.Random) -> str:
    text = template
    for _ in range(2):  # details may themselves hold placeholders
        text = text.format(topic=rng.choice(TOPICS), place=rng.choice(PLACES), person=rng.choice(PEOPLE),
                           feeling=rng.choice(FEELINGS), detail=rng.choice(DETAILS))
    return text


def slug(content: str) -> str:
    return re.sub(r"[^a-z0-9]", "-", content[:50].lower())


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[A-Z][a-z]+(?: [A-Z][a-z]+)*", text) if w not in ("I", "We", "The", "Today")]


def memory(i: int, when: datetime, rng: random.Random) -> tuple[dict, str]:
    kind = rng.choices(["conversation", "observation", "reflection", "journal", "dream", "inner_dialogue"],
                       weights=[45, 20, 12, 10, 6, 7])[0]
    mem: dict = {"id": f"evt-{when:%Y%m%d%H%M%S}", "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "type": kind}
    if kind == "conversation":
        question, answer = rng.choice(QUESTIONS)
        mem["content"] = f'Me: "{fill(question, rng)}"' if i % 3 == 0 else fill(question, rng)
        mem["response"] = fill(answer, rng)
        mem["metadata"] = {"conversationId": f"conv-{i // 4:04d}", "cognitiveMode": "dual"}
    else:
        pool = {"observation": OBSERVATIONS, "reflection": REFLECTIONS, "journal": JOURNALS, "dream": DREAMS,
                "inner_dialogue": REFLECTIONS}[kind]
        mem["content"] = fill(rng.choice(pool), rng)
        mem["metadata"] = {}
    mem["tags"] = sorted({kind, *rng.sample(["work", "garden", "music", "running", "family", "design"], 2)})
    mem["entities"] = sorted(set(words(mem["content"])))[:4]
    mem["importance"] = round(rng.uniform(0.3, 0.95), 2)
    mem["metadata"].update({"processed": True, "processedAt": mem["timestamp"], "model": "ollama:phi3:mini"})
    if i % 37 == 5:
        mem["metadata"]["trainingConsent"] = False  # the user said no: curation must never train on it
    if i % 41 == 7:
        mem["content"] = "ok"  # too short to teach anything
    if i % 29 == 3 and kind not in ("dream",):
        mem["tags"], mem["entities"] = [], []  # not yet organised
    category = {"reflection": "reflections", "dream": "dreams"}.get(kind)
    if category:
        rel = f"profiles/sam/memory/episodic/{category}/{when:%Y/%m/%d}/{mem['id']}.json"
    else:
        rel = f"memory/episodic/{when:%Y}/{mem['id']}-{slug(mem['content'])}.json"
    return mem, rel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).parent / "sample-memories")
    parser.add_argument("--count", type=int, default=240)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    when = datetime(2025, 6, 1, 8, 0, tzinfo=timezone.utc)
    for i in range(args.count):
        when += timedelta(hours=rng.randint(3, 30), minutes=rng.randint(0, 59), seconds=rng.randint(0, 59))
        mem, rel = memory(i, when, rng)
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(mem, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.count} memories under {args.out}")


if __name__ == "__main__":
    main()
