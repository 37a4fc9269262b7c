"""The data stages on datatrove: sharded, resumable per task, on one machine, Slurm or Ray.

`phi-eval data run RECIPE.yaml` turns a recipe's `data.stages` into datatrove phases (plan.py)
of phi-eval blocks (blocks.py) and global steps (reduce.py) over sharded JSONL (shards.py), and
runs them with an executor (runner.py). See the README's "Data pipeline at scale".
"""

