"""Training recipes: ways of training the same parts (COSMOS two-stage; LDLM joint, later)."""

from ldlm.recipes.cosmos import train_cosmos

RECIPES = {"cosmos": train_cosmos}

__all__ = ["RECIPES", "train_cosmos"]
