"""An LLM judge of the closest matches, through any OpenAI-compatible chat endpoint.

The idea of LMSYS's "LLM decontaminator" (Yang et al. 2023): embedding or AST search finds the
nearest training snippets, and a strong model decides whether a snippet is the benchmark item
rephrased, reformatted or translated, which no overlap threshold can tell. The judge only sees
the top matches the other methods found; it is optional and costs one request per pair.
"""
from __future__ import annotations

import os

from phi_eval.errors import UsageError

INSTRUCTIONS = (
    "You check a benchmark for contamination. You get a benchmark item and a snippet of training "
    "data. Answer 'yes' if the snippet contains the same problem as the item, even reworded, "
    "reformatted, translated to another language or with renamed identifiers, or its solution; "
    "answer 'no' if they only share a topic or common phrases. Answer with one word: yes or no."
)


class Judge:
    def __init__(self, spec: str, *, timeout_s: float = 60.0):
        from openai import OpenAI

        from phi_eval.zoo import parse_model_spec

        parsed = parse_model_spec(spec if spec.startswith("openai:") else f"openai:{spec}")
        self.spec, self.model = spec, parsed.target
        # A local server needs no key; the openai client insists on one.
        self.client = OpenAI(base_url=parsed.base_url, api_key=os.environ.get("OPENAI_API_KEY") or "none",
                             timeout=timeout_s, max_retries=2)

    def verdict(self, item: str, snippet: str) -> dict:
        from openai import OpenAIError

        try:
            response = self.client.chat.completions.create(
                model=self.model, temperature=0, max_tokens=4,
                messages=[{"role": "system", "content": INSTRUCTIONS},
                          {"role": "user", "content": f"Benchmark item:\n{item}\n\nTraining snippet:\n{snippet}"}])
        except OpenAIError as e:
            raise UsageError(f"judge {self.spec}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
        answer = (response.choices[0].message.content or "").strip()
        word = answer.lower().strip(" .!'\"")
        return {"same": True if word.startswith("yes") else False if word.startswith("no") else None,
                "answer": answer}
