"""Training recipes: ways of training the same parts (COSMOS two-stage; LDLM joint)."""

from ldlm.recipes.cosmos import train_cosmos
from ldlm.recipes.ldlm import train_ldlm

RECIPES = {"cosmos": train_cosmos, "ldlm": train_ldlm}

__all__ = ["RECIPES", "train_cosmos", "train_ldlm"]
