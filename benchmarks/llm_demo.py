"""The LLM comparison's machinery on the demo suite, with a tiny randomly initialised causal LM (no LLM weights
exist on this machine): time per task and the table ``hf-taskgroup llm`` prints.

The scores of a random model are chance-level by construction; what this measures is that every task type
runs end to end (prompts, label scoring, generation and parsing, metrics, saved predictions) and how long
scoring takes per example on a CPU. With a real model (e.g. ``--model Qwen/Qwen2.5-0.5B-Instruct`` on a
machine that reaches the Hub, or any local folder) the same script prints real figures.

    python benchmarks/llm_demo.py --shots 2 --max_examples 40
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from hf_taskgroup.data.tasks import TaskSuite
from hf_taskgroup.demo import DEMO_SUITE_PATH
from hf_taskgroup.llm import LLMConfig, evaluate_llm, format_llm_table, load_causal_lm
from hf_taskgroup.training.train import default_model_path, load_tokenizer

RESULTS = Path(__file__).parent / "results" / "llm_demo.json"


def tiny_causal_lm(folder: Path) -> str:
    """A 2-layer GPT-2 with random weights and MiniLM's WordPiece tokenizer, saved to ``folder``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = load_tokenizer(default_model_path())
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=64, n_layer=2, n_head=2,
                     bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a causal LM folder or Hub id (default: a tiny random GPT-2)")
    parser.add_argument("--shots", type=int, default=2)
    parser.add_argument("--max_examples", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = TaskSuite.from_yaml(DEMO_SUITE_PATH)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model or tiny_causal_lm(Path(tmp) / "tiny-gpt2")
        config = LLMConfig(model=model_path, shots=args.shots, max_examples=args.max_examples)
        model, tokenizer = load_causal_lm(config)
        rows = {}
        for task in suite.task_names:
            start = time.perf_counter()
            res = evaluate_llm(suite.subset([task]), config, model=model, tokenizer=tokenizer, output_dir=None,
                               progress=False)[task]
            seconds = time.perf_counter() - start
            rows[task] = {"result": res.to_dict(), "seconds": seconds, "seconds_per_example": seconds / res.num_examples}
            print(format_llm_table({task: res}).splitlines()[-1], f"  {seconds:.1f} s ({seconds / res.num_examples:.2f} s/example)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": args.model or "tiny random GPT-2 (2 layers, 64 dims)", "shots": args.shots,
                                   "max_examples": args.max_examples, "threads": args.threads, "tasks": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
