"""The textbook-quality data pipeline (phi-1): source -> annotate -> classify -> filter -> synthesize -> dedup.

Each stage reads and writes JSONL (one document a line: {"id", "text", ...metadata}) and
leaves a manifest beside its output; phi_eval.data.pipeline chains them from a recipe.
"""
