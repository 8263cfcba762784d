"""Test helpers: tiny tokenizers, tiny encoders and tiny task data, all built in the test (offline)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import datasets
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, PreTrainedTokenizerFast

WORDS = (
    "good great fine nice bad awful poor sad cell gene protein tumor drug dose patient risk "
    "the a of and to in is was not very quite this that it"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer(words: Sequence[str] = WORDS) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer with BERT-style special tokens and pair handling."""
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *dict.fromkeys(w.lower() for w in words)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def tiny_bert_config(vocab_size: int = 64, hidden: int = 16, **kwargs: Any) -> BertConfig:
    defaults = dict(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )
    defaults.update(kwargs)
    return BertConfig(**defaults)


def sentiment_rows(n: int, seed: int = 0, flip: bool = False) -> dict[str, list]:
    """Single-text classification rows whose label follows the words (learnable)."""
    rng = random.Random(seed)
    pos, neg = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"]
    text, label = [], []
    for _ in range(n):
        y = rng.random() < 0.5
        words = rng.sample(pos if y != flip else neg, 2) + rng.sample(["the", "a", "very", "it", "was"], 2)
        rng.shuffle(words)
        text.append(" ".join(words))
        label.append("pos" if y else "neg")
    return {"text": text, "label": label}


def classification_dataset(n_train: int = 32, n_eval: int = 16, seed: int = 0, flip: bool = False) -> datasets.DatasetDict:
    return datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(sentiment_rows(n_train, seed, flip)),
            "validation": datasets.Dataset.from_dict(sentiment_rows(n_eval, seed + 1, flip)),
            "test": datasets.Dataset.from_dict(sentiment_rows(n_eval, seed + 2, flip)),
        }
    )


def regression_rows(n: int, seed: int = 0) -> dict[str, list]:
    rng = random.Random(seed)
    a, b, y = [], [], []
    for _ in range(n):
        k = rng.randint(0, 3)
        a.append(" ".join(["good"] * (k + 1) + ["the"]))
        b.append(" ".join(["great"] * (3 - k + 1)))
        y.append(float(k))
    return {"text_a": a, "text_b": b, "label": y}


def multilabel_rows(n: int, seed: int = 0) -> dict[str, list]:
    rng = random.Random(seed)
    text, label = [], []
    for _ in range(n):
        labs = [lab for lab, w in (("gene", "gene"), ("drug", "drug"), ("tumor", "tumor")) if rng.random() < 0.5]
        words = [w for w in labs] + ["the", "cell"]
        text.append(" ".join(words))
        label.append(labs)
    label[0] = ["gene", "drug", "tumor"]
    return {"text": text, "label": label}


def ner_rows(n: int, seed: int = 0) -> dict[str, list]:
    rng = random.Random(seed)
    toks, tags = [], []
    for _ in range(n):
        row, trow = [], []
        for _ in range(rng.randint(3, 6)):
            if rng.random() < 0.3:
                row += ["tumor", "cell"]
                trow += ["B", "I"]
            else:
                row.append(rng.choice(["the", "a", "of", "patient", "dose"]))
                trow.append("O")
        toks.append(row)
        tags.append(trow)
    return {"tokens": toks, "label": tags}


def dataset_dict(rows_fn, n_train: int = 32, n_eval: int = 16, seed: int = 0) -> datasets.DatasetDict:
    return datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows_fn(n_train, seed)),
            "validation": datasets.Dataset.from_dict(rows_fn(n_eval, seed + 1)),
            "test": datasets.Dataset.from_dict(rows_fn(n_eval, seed + 2)),
        }
    )


def tiny_suite(types: Sequence[str] = ("classification", "regression", "multilabel", "token_classification")):
    """A TaskSuite with one small in-memory task per requested type."""
    from hf_taskgroup.data.tasks import TaskSpec, TaskSuite

    specs = []
    for t in types:
        if t == "classification":
            specs.append(TaskSpec(name="sent", type=t, text_columns=["text"], data=classification_dataset()))
        elif t == "regression":
            specs.append(TaskSpec(name="sim", type=t, text_columns=["text_a", "text_b"], data=dataset_dict(regression_rows)))
        elif t == "multilabel":
            specs.append(TaskSpec(name="hall", type=t, text_columns=["text"], data=dataset_dict(multilabel_rows)))
        elif t == "token_classification":
            specs.append(TaskSpec(name="ner", type=t, data=dataset_dict(ner_rows)))
    return TaskSuite(specs, name="tiny")


def tiny_model(suite=None, *, trunk=(), pooling: str = "cls", dropout: float = 0.0, seed: int = 0):
    """A MultiTaskModel on a tiny random BERT with one head per task of the suite."""
    import torch

    from hf_taskgroup.training.modeling import MultiTaskConfig, MultiTaskModel

    suite = suite if suite is not None else tiny_suite()
    torch.manual_seed(seed)
    enc = tiny_bert_config(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    config = MultiTaskConfig(
        encoder=enc, tasks=suite.task_infos(), pooling=pooling, trunk_hidden_sizes=list(trunk),
        classifier_dropout=dropout, trunk_dropout=dropout,
    )
    return MultiTaskModel(config)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for torchrun's rendezvous in tests)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_cli_suite(root, name: str = "cli-suite"):
    """A 3-task suite (cli_a, cli_b, cli_c with flipped labels) on jsonl files and a tiny BERT + tokenizer folder
    under ``root``: ``(suite.yaml, model folder)`` to pass as ``--suite`` / ``--model``."""
    import json
    from pathlib import Path

    import torch
    import yaml
    from transformers import BertModel

    root = Path(root)
    model_dir = root / "model"
    torch.manual_seed(0)
    BertModel(tiny_bert_config(), add_pooling_layer=False).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    tasks = []
    for k, (task, flip) in enumerate((("cli_a", False), ("cli_b", False), ("cli_c", True))):
        files = {}
        for j, (split, n) in enumerate((("train", 16), ("validation", 8), ("test", 8))):
            rows = sentiment_rows(n, seed=10 * k + j, flip=flip)
            path = root / task / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(rows["text"], rows["label"])))
            files[split] = f"{task}/{split}.jsonl"
        tasks.append({"name": task, "type": "classification", "text_columns": ["text"], "label_column": "label",
                      "data_files": files})
    suite_path = root / "suite.yaml"
    suite_path.write_text(yaml.safe_dump({"name": name, "tasks": tasks}))
    return suite_path, model_dir


def truncate_half(path) -> None:
    """Damage a cache file: cut it to half its size."""
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def flip_digit_after(key: str):
    """A damage function for JSON cache files: change the first non-zero digit after ``"key"`` (still valid JSON,
    same size, another number), so only a checksum can tell."""

    def flip(path) -> None:
        data = bytearray(path.read_bytes())
        i = data.index(f'"{key}"'.encode())
        i = next(j for j in range(i, len(data)) if chr(data[j]) in "123456789")
        data[i] = ord("7") if data[i] != ord("7") else ord("3")
        path.write_bytes(bytes(data))
        json.loads(path.read_text())  # the damage leaves valid JSON

    return flip
