"""The final corpus as Parquet shards (`phi-eval data run --format parquet`), beside OUT/corpus.jsonl.

OUT/corpus/NNNNN.parquet, one per task, each a contiguous run of the corpus in its order (read the
files in name order to get it back). Every field of every document is a column: the schema is the
union of the documents' fields, each column's type inferred from all its values (pyarrow infers
from the first row only, which would drop a field the first document lacks); a document without a
field reads back null; a field whose values mix types (text and numbers) is stored as JSON text
and named in the manifest. The manifest (in OUT/pipeline.json) lists each shard's rows and sha256.
"""
from __future__ import annotations

import json
from pathlib import Path

from phi_eval.errors import UsageError


def columns_of(records: list[dict]) -> tuple[dict, list[str]]:
    import pyarrow as pa

    names = list(dict.fromkeys(name for r in records for name in r))
    columns, as_json = {}, []
    for name in names:
        values = [r.get(name) for r in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[name] = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values])
            as_json.append(name)
    return columns, as_json


def write_parquet_shards(records: list[dict], folder: Path, shards: int) -> dict:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("--format parquet needs pyarrow; pip install pyarrow, or use --format jsonl") from None
    from phi_eval.data.stage import file_sha256

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.parquet"):
        stale.unlink()
    columns, as_json = columns_of(records)
    table = pa.table(columns) if records else pa.table({"id": pa.array([], pa.string()),
                                                        "text": pa.array([], pa.string())})
    size = -(-len(records) // shards) if records else 0
    files = []
    for rank in range(shards):
        path = folder / f"{rank:05d}.parquet"
        partial = path.with_name(path.name + ".writing")
        pq.write_table(table.slice(rank * size, size), partial, compression="zstd")
        partial.replace(path)
        files.append({"path": str(path), "rows": min(size, max(0, len(records) - rank * size)),
                      "sha256": file_sha256(path)})
    return {"format": "parquet", "folder": str(folder), "shards": files, "json_columns": as_json,
            "order": "the shards in name order, rows in order: corpus order"}


def read_parquet_shards(folder: Path, json_columns: list[str] = ()) -> list[dict]:
    """The documents back, in corpus order (null fields left out, as the JSONL documents lack them)."""
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(Path(folder).glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows.append({k: json.loads(v) if k in json_columns else v for k, v in row.items() if v is not None})
    return rows
