"""Text data for the recipes: a dataset registry, tokenising/packing, and the frozen-feature cache."""

from ldlm.data.features import (
    FeatureCacheError,
    FeatureSet,
    build_features,
    cache_key,
)
from ldlm.data.registry import (
    DatasetError,
    find_data_dir,
    list_datasets,
    load_texts,
    split_sentences,
    split_texts,
    subset_texts,
)
from ldlm.data.tokenize import (
    TokenizedTexts,
    appended_end_token,
    decode_text,
    pack_texts,
    packed_tokens,
    tokenize_texts,
)

__all__ = [
    "DatasetError",
    "FeatureCacheError",
    "FeatureSet",
    "TokenizedTexts",
    "appended_end_token",
    "build_features",
    "cache_key",
    "decode_text",
    "find_data_dir",
    "list_datasets",
    "load_texts",
    "pack_texts",
    "packed_tokens",
    "split_sentences",
    "split_texts",
    "subset_texts",
    "tokenize_texts",
]
