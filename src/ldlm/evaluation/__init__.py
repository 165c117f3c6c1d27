"""Evaluation of generated text: judge-LM perplexity, MAUVE, diversity/memorisation, conditional metrics,
the multi-seed suite (``ldlm evaluate``) and latent-space probes (``ldlm probe``)."""

from ldlm.evaluation.conditional import bertscore, bleu, conditional_metrics, rouge
from ldlm.evaluation.judge import JudgeLM
from ldlm.evaluation.mauve import MauveProtocol, judge_features, mauve_from_features, mauve_texts
from ldlm.evaluation.metrics import distinct_ngrams_product, memorization, unigram_entropy
from ldlm.evaluation.scoring import ScoringJudge
from ldlm.evaluation.suite import SuiteConfig, evaluate_model

__all__ = [
    "JudgeLM",
    "MauveProtocol",
    "ScoringJudge",
    "SuiteConfig",
    "bertscore",
    "bleu",
    "conditional_metrics",
    "distinct_ngrams_product",
    "evaluate_model",
    "judge_features",
    "mauve_from_features",
    "mauve_texts",
    "memorization",
    "rouge",
    "unigram_entropy",
]
