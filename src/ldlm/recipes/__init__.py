"""Training recipes: ways of training the same parts (COSMOS two-stage; LDLM joint; seq2seq conditional), and the
autoregressive baseline they are measured against (``ar``)."""

from ldlm.recipes.ar import train_ar
from ldlm.recipes.cosmos import train_cosmos
from ldlm.recipes.ldlm import train_ldlm
from ldlm.recipes.seq2seq import train_seq2seq

RECIPES = {"cosmos": train_cosmos, "ldlm": train_ldlm, "seq2seq": train_seq2seq, "ar": train_ar}

__all__ = ["RECIPES", "train_ar", "train_cosmos", "train_ldlm", "train_seq2seq"]
