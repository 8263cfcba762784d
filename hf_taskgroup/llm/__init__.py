"""Prompted causal LMs on the same suite: zero- and few-shot baselines beside the fine-tuned models.

See :func:`evaluate_llm`; ``hf-taskgroup llm --suite S --model M --shots K`` on the command line.
"""

from hf_taskgroup.llm.evaluate import (
    LLMConfig,
    LLMTaskResult,
    evaluate_llm,
    format_llm_table,
    load_causal_lm,
    parse_number,
)
from hf_taskgroup.llm.prompts import PromptBuilder

__all__ = ["LLMConfig", "LLMTaskResult", "PromptBuilder", "evaluate_llm", "format_llm_table", "load_causal_lm", "parse_number"]
