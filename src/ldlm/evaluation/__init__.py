"""Evaluation of generated text: judge-LM perplexity and model-free diversity/memorisation metrics."""

from ldlm.evaluation.judge import JudgeLM
from ldlm.evaluation.metrics import distinct_ngrams_product, memorization, unigram_entropy

__all__ = ["JudgeLM", "distinct_ngrams_product", "memorization", "unigram_entropy"]
