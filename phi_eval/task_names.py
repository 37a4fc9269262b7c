"""The benchmark names of DESIGN.md and their groups, without any task's dataset code: the task
registry (phi_eval.tasks), the zoo cards and the backends' messages share them."""

GROUPS: dict[str, tuple[str, ...]] = {
    "code": ("humaneval", "mbpp"),
    "math": ("gsm8k", "gsm8k_code"),
    "commonsense": ("winogrande", "arc_easy", "arc_challenge", "boolq", "siqa", "piqa", "hellaswag",
                    "openbookqa", "mmlu"),
    "safety": ("toxigen", "toxigen_cls"),
}
GROUPS["phi"] = tuple(name for group in GROUPS.values() for name in group)
TASK_NAMES = GROUPS["phi"]
LOGLIKELIHOOD_TASKS = (*GROUPS["commonsense"], "toxigen_cls")  # scored by log-probabilities, not generation
