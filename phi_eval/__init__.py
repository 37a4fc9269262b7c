"""phi-eval."""
