"""Read a W&B offline run file (``run-<id>.wandb``) back into protobuf records.

wandb 0.31 no longer ships a reader, so tests parse the format directly: a 7-byte header (``:W&B``,
magic 0xBEE1, version) then LevelDB-log framing (32 KiB blocks; each chunk has a 4-byte checksum,
a 2-byte length and a 1-byte type: full/first/middle/last) around ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B run file"
    pos, records, pending = HEADER, [], b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            break
        if kind == FULL:
            payload = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        else:
            payload, pending = pending + chunk, b""
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """config, summary, history rows and artifacts logged in one offline run directory."""
    path = next(Path(run_dir).glob("run-*.wandb"))
    out: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "artifacts": [], "run": None}
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "config":
            for item in rec.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in rec.summary.update:
                key = item.key or "/".join(item.nested_key)
                out["summary"][key] = json.loads(item.value_json)
        elif kind == "history":
            row = {}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            out["history"].append(row)
        elif kind == "artifact":
            a = rec.artifact
            out["artifacts"].append({"name": a.name, "type": a.type})
            out.setdefault("logged", []).append(
                {
                    "name": a.name,
                    "type": a.type,
                    "aliases": sorted(a.aliases),
                    "digest": a.digest,
                    "files": sorted(entry.path for entry in a.manifest.contents),
                    "refs": [entry.ref for entry in a.manifest.contents if entry.ref],
                    "metadata": json.loads(a.metadata) if a.metadata else {},
                }
            )
        elif kind == "run":
            out["run"] = {"id": rec.run.run_id, "group": rec.run.run_group, "job_type": rec.run.job_type}
            for item in rec.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
    return out


def runs_in_group(wandb_root: Path, group: str) -> list[dict[str, Any]]:
    runs = []
    for run_dir in sorted(Path(wandb_root).glob("**/offline-run-*")):
        summary = summarize_run(run_dir)
        if summary["run"] and summary["run"]["group"] == group:
            runs.append(summary)
    return runs
