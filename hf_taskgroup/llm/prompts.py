"""Prompts for causal LMs, built from a task suite: instruction, label words and K demonstrations.

A prompt is a *prefix* (instruction, demonstrations, the query) that a *continuation* (the answer) follows.
Classification scores every label's verbalisation as a continuation; multi-label asks one yes/no question
per label; regression and token classification generate a short answer that is parsed back.

Defaults come from the task (its ``description`` and label names); a suite YAML can override them per task
with ``prompt`` (the instruction) and ``label_words`` (a verbalisation per label, same order as the labels).

Example::

    >>> from hf_taskgroup.data.tasks import TaskSpec, TaskValidationError
    >>> import datasets
    >>> data = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["good", "bad"], "label": ["pos", "neg"]})})
    >>> spec = TaskSpec(name="sent", text_columns=["text"], data=data)
    >>> builder = PromptBuilder(spec, shots=1, seed=0)
    >>> print(builder.prefix({"text": "nice"}).splitlines()[-2:])
    ['Text: nice', 'Answer:']
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from hf_taskgroup.data.tasks import TaskSpec, TaskValidationError

#: the words of a yes/no question (multi-label tasks)
YES, NO = "yes", "no"
#: separator between generated entity mentions (token classification)
MENTION_SEP = " | "
NONE_WORD = "none"
MAX_TEXT_CHARS = 1500


def entity_types(label_names: Sequence[str]) -> list[str]:
    """Entity types of a BIO tag set: ``["O", "B-Disease", "I-Disease"]`` -> ``["Disease"]``; bare B/I -> ``["entity"]``."""
    types = []
    for tag in label_names:
        tag = str(tag)
        if tag == "O":
            continue
        kind = tag[2:] if len(tag) > 2 and tag[1] in "-_" else "entity"
        if kind not in types:
            types.append(kind)
    return types


class PromptBuilder:
    """Build the prompts of one task.

    Args:
        task: the task (its ``description``, ``prompt``, ``label_words`` and label names are used).
        shots: number of demonstrations drawn from the train split (fixed ``seed``; 0 = zero-shot).
        seed: seed of the demonstration draw.
        max_text_chars: each input text is cut to this many characters (long abstracts would not fit).
    """

    def __init__(self, task: TaskSpec, *, shots: int = 0, seed: int = 0, max_text_chars: int = MAX_TEXT_CHARS):
        if shots < 0:
            raise ValueError(f"task {task.name!r}: shots must be >= 0, got {shots}")
        self.task = task
        self.shots = shots
        self.max_text_chars = max_text_chars
        self.labels = [str(x) for x in (task.get_label_names() or [])]
        words = getattr(task, "label_words", None)
        if words is not None:
            if isinstance(words, Mapping):
                words = [words.get(lab, lab) for lab in self.labels]
            if len(words) != len(self.labels):
                raise TaskValidationError([f"task {task.name!r}: label_words has {len(words)} entries for "
                                           f"{len(self.labels)} labels"])
        self.label_words = [str(w) for w in words] if words is not None else list(self.labels)
        self.demos = self._draw_demos(seed)

    # ---- pieces ----------------------------------------------------------------------------------
    def _draw_demos(self, seed: int) -> list[dict[str, Any]]:
        if self.shots == 0:
            return []
        train = self.task.load()["train"]
        if len(train) == 0:
            raise TaskValidationError([f"task {self.task.name!r}, split 'train': empty, no demonstrations to draw"])
        idx = random.Random(seed).sample(range(len(train)), min(self.shots, len(train)))
        return [train[i] for i in idx]

    def instruction(self) -> str:
        t = self.task
        custom = getattr(t, "prompt", None)
        if custom:
            return str(custom)
        about = f" ({t.description.strip()})" if t.description else ""
        if t.type == "classification":
            return f"Task {t.name}{about}. Answer with one of: {', '.join(self.label_words)}."
        if t.type == "multilabel":
            return f"Task {t.name}{about}. Answer {YES} or {NO}."
        if t.type == "regression":
            return f"Task {t.name}{about}. Answer with a number only."
        kinds = entity_types(self.labels)
        kind = kinds[0] if len(kinds) == 1 else "entity"
        fmt = "mention" if len(kinds) == 1 else "mention (type)"
        return (f"Task {t.name}{about}. List every {kind} mention of the text, copied word for word, as "
                f"'{fmt}' separated by '{MENTION_SEP.strip()}'; answer '{NONE_WORD}' if there is none."
                + (f" Types: {', '.join(kinds)}." if len(kinds) > 1 else ""))

    def _cut(self, text: Any) -> str:
        text = "" if text is None else str(text)
        return text if len(text) <= self.max_text_chars else text[: self.max_text_chars] + " ..."

    def render_input(self, example: Mapping[str, Any]) -> str:
        t = self.task
        if t.type == "token_classification":
            return "Text: " + self._cut(" ".join(map(str, example[t.tokens_column])))
        if len(t.text_columns) == 2:
            a, b = (self._cut(example[c]) for c in t.text_columns)
            return f"Text A: {a}\nText B: {b}"
        return "Text: " + self._cut(example[t.text_columns[0]])

    def answer(self, example: Mapping[str, Any], label: str | None = None) -> str:
        """The gold answer of a demonstration (for multi-label: the yes/no answer about ``label``)."""
        t = self.task
        y = example[t.label_column]
        if t.type == "classification":
            return self.label_words[self.labels.index(str(y))]
        if t.type == "multilabel":
            return YES if label in {str(v) for v in (y or [])} else NO
        if t.type == "regression":
            return f"{float(y):g}"
        return format_mentions(example[t.tokens_column], [str(v) for v in y], entity_types(self.labels))

    def question(self, label: str | None) -> str:
        if self.task.type == "multilabel":
            return f"Is '{self.label_words[self.labels.index(label)]}' a label of this text?"
        return ""

    # ---- the prompt ------------------------------------------------------------------------------
    def prefix(self, example: Mapping[str, Any], label: str | None = None) -> str:
        """The text before the answer: instruction, demonstrations, the query, ``Answer:``."""
        question = self.question(label)
        blocks = [self.instruction()]
        for demo in self.demos:
            blocks.append("\n".join(filter(None, [self.render_input(demo), question, f"Answer: {self.answer(demo, label)}"])))
        blocks.append("\n".join(filter(None, [self.render_input(example), question, "Answer:"])))
        return "\n\n".join(blocks)


def format_mentions(tokens: Sequence[str], tags: Sequence[str], kinds: Sequence[str]) -> str:
    """The entity mentions of a BIO-tagged example as the model is asked to write them."""
    spans, cur, kind = [], [], None
    for tok, tag in zip(tokens, tags):
        starts = tag.startswith("B")
        inside = tag.startswith("I") and cur
        if cur and not inside:
            spans.append((" ".join(cur), kind))
            cur = []
        if starts or (tag.startswith("I") and not cur):
            cur, kind = [str(tok)], (tag[2:] if len(tag) > 2 else "entity")
        elif inside:
            cur.append(str(tok))
    if cur:
        spans.append((" ".join(cur), kind))
    if not spans:
        return NONE_WORD
    if len(kinds) > 1:
        return MENTION_SEP.join(f"{m} ({k})" for m, k in spans)
    return MENTION_SEP.join(m for m, _ in spans)


def mentions_to_tags(generated: str, tokens: Sequence[str], kinds: Sequence[str], tag_names: Sequence[str]) -> list[str]:
    """Match generated mentions back to word spans of ``tokens`` (every occurrence, case-insensitive).

    Approximate by design: a mention that is not a contiguous word sequence of the text is dropped, and a
    mention found several times tags every occurrence.
    """
    words = [str(t).lower() for t in tokens]
    tags = ["O"] * len(words)
    text = generated.strip().split("\n")[0]
    if not text or text.lower().startswith(NONE_WORD):
        return tags
    for raw in text.split(MENTION_SEP.strip()):
        raw = raw.strip()
        kind = kinds[0] if kinds else "entity"
        if len(kinds) > 1 and raw.endswith(")") and "(" in raw:
            raw, _, k = raw[:-1].rpartition("(")
            raw, kind = raw.strip(), k.strip() if k.strip() in kinds else kind
        mention = raw.lower().split()
        if not mention:
            continue
        b, i = _tag_for("B", kind, tag_names), _tag_for("I", kind, tag_names)
        for start in range(len(words) - len(mention) + 1):
            if words[start:start + len(mention)] == mention and all(t == "O" for t in tags[start:start + len(mention)]):
                tags[start] = b
                for j in range(start + 1, start + len(mention)):
                    tags[j] = i
    return tags


def _tag_for(prefix: str, kind: str, tag_names: Sequence[str]) -> str:
    for candidate in (f"{prefix}-{kind}", f"{prefix}_{kind}", prefix):
        if candidate in tag_names:
            return candidate
    return "O"
