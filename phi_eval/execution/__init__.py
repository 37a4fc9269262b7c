"""Sandboxed execution of model-written code, and pass@k."""
from phi_eval.execution.passk import pass_at_k
from phi_eval.execution.sandbox import STATUSES, Limits, Sandbox, Verdict

__all__ = ["Limits", "Sandbox", "STATUSES", "Verdict", "pass_at_k"]
