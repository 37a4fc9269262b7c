"""Train small phi-style models from YAML recipes.

    recipe = load_recipe("recipes/phi-tiny.yaml", overrides=["training.max_steps=10"])
    checkpoint_dir = train(recipe, out_dir=None, progress=True)

recipe.py holds the schema; corpus.py, tokenizer.py, model.py and loop.py the stages;
checkpoint.py the resumable state, flops.py MFU, compare.py the equal-compute comparison
of two recipes (`phi-eval train A.yaml --compare B.yaml`).
"""
from phi_eval.train.recipe import Recipe, load_recipe

__all__ = ["Recipe", "load_recipe", "train"]


def __getattr__(name):
    # `train` pulls in torch and transformers (seconds); a bad recipe should fail before that.
    if name == "train":
        from phi_eval.train.loop import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
