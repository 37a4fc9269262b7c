"""Contamination checks (phi-1, Section 5): n-gram overlap against a corpus index, embedding and AST
similarity, Min-K% membership scores, clean-subset scores, and corpus decontamination.

Modules: normalize (units and n-gram hashing), corpus (sources), items (what text of a benchmark
item is checked), ngram_index (build, merge, query), similarity (chunks, embeddings, AST),
membership (Min-K%, Min-K%++), judge (LLM judge), check (runs the methods), report (JSON and
Markdown), subsets (flagged vs clean scores of a run), decontaminate (the data stage).
"""
