"""The `append` stage: the corpus so far, followed by the documents of JSONL files.

For data made once and kept, such as a teacher's synthetic textbooks committed with a study
(phi-1's CodeTextbook next to its filtered code): the files are inputs of the stage, hashed in
its manifest, so changing them reruns it. The manifest counts documents and bytes per file.
"""
from __future__ import annotations

from pathlib import Path

from phi_eval.data.stage import Field, StageRun, jsonl_input, read_documents, run_stage

FIELDS = {
    "files": Field("strs", required=True, help="JSONL files whose documents are appended, in order"),
}


def run_append(settings: dict, input_path: Path, output: Path, *, show_progress: bool = True) -> dict:
    files = [Path(f) for f in settings["files"]]
    inputs = [jsonl_input(input_path), *(jsonl_input(f) for f in files)]
    counts = {}

    def body(run: StageRun) -> dict:
        def everything():
            for path in [input_path, *files]:
                tally = counts.setdefault(str(path), {"documents": 0, "bytes": 0})
                for document in read_documents(path):
                    tally["documents"] += 1
                    tally["bytes"] += len(document["text"].encode("utf-8"))
                    yield document

        run.write(everything())
        return {"counts": {"documents": run.written["documents"]}, "per_file": counts}

    return run_stage("append", FIELDS, settings, inputs, output, body, show_progress=show_progress)
