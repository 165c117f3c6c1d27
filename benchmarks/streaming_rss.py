"""Peak resident memory of training data from a corpus larger than a memory cap: streamed into a token file and
read back batch by batch for a full epoch, against loading it as a list and packing it in memory.

    python benchmarks/streaming_rss.py [--corpus-mib 64] [--cap-mib 16] [--out results/streaming_rss.json]

Each path runs in a fresh child process; memory is the growth of peak RSS (VmHWM, reset through
/proc/self/clear_refs after imports and the tokenizer are loaded) over the RSS at that point.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there been one all we their has would when if so no will more about can out up what said "
    "market city government people year week report company school music river station history science team"
).split()


def make_corpus(path: Path, mib: float, seed: int = 0) -> int:
    """A .jsonl corpus of pseudo-sentences of at least ``mib`` MiB; returns its size in bytes."""
    rng = random.Random(seed)
    target = int(mib * (1 << 20))
    with path.open("w") as f:
        while f.tell() < target:
            words = rng.choices(WORDS, k=rng.randint(20, 120))
            f.write(json.dumps({"text": " ".join(words).capitalize() + "."}) + "\n")
    return path.stat().st_size


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(mode: str, corpus: Path, workdir: Path, length: int, batch: int) -> dict:
    """Run one path in this process and report its memory and time."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from ldlm.data import load_texts, pack_texts
    from ldlm.data.batches import BatchStream
    from ldlm.data.streaming import stream_texts
    from ldlm.data.token_file import TokenRows, write_token_file
    from ldlm.storage.resources import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    base = _rss_mib("VmRSS")
    start = time.perf_counter()
    if mode == "stream":
        meta = write_token_file(stream_texts(str(corpus)), tokenizer, workdir / "corpus.bin")
        rows = TokenRows(workdir / "corpus.bin", length)
        stream = BatchStream(len(rows), batch, rows.batch, seed=0)
        checksum = 0
        for _ in range(stream.batches_per_epoch):  # one full epoch of random batches
            checksum += int(next(stream)["input_ids"].sum())
        tokens, n_rows = meta["tokens"], len(rows)
    else:
        ids = pack_texts(tokenizer, load_texts(str(corpus)), length)
        order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
        checksum = sum(int(ids[order[i : i + batch]].sum()) for i in range(0, len(ids) - batch + 1, batch))
        tokens, n_rows = int(np.prod(ids.shape)), len(ids)
    return {
        "mode": mode,
        "rss_before_mib": round(base, 1),
        "peak_rss_mib": round(_rss_mib("VmHWM"), 1),
        "growth_mib": round(_rss_mib("VmHWM") - base, 1),
        "seconds": round(time.perf_counter() - start, 2),
        "tokens": tokens,
        "rows": n_rows,
        "checksum": checksum,
    }


def measure(corpus_mib: float, cap_mib: float, workdir: Path, *, length: int = 128, batch: int = 256) -> dict:
    """Both paths on one generated corpus, each in a child process."""
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "corpus.jsonl"
    size = make_corpus(corpus, corpus_mib)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    runs = {}
    for mode in ("stream", "in_memory"):
        cmd = [sys.executable, __file__, "--child", mode, str(corpus), str(workdir), str(length), str(batch)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        runs[mode] = json.loads(out.strip().splitlines()[-1])
    stream = runs["stream"]
    return {
        "corpus_mib": round(size / (1 << 20), 1),
        "cap_mib": cap_mib,
        "row_length": length,
        "batch_rows": batch,
        "streamed": stream,
        "in_memory": runs["in_memory"],
        "bounded": stream["growth_mib"] < cap_mib < size / (1 << 20),
        "same_data": stream["checksum"] == runs["in_memory"]["checksum"],
        "note": "growth = peak RSS during tokenising + one epoch of random batches, minus RSS after imports",
    }


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        mode, corpus, workdir, length, batch = sys.argv[2:7]
        print(json.dumps(child(mode, Path(corpus), Path(workdir), int(length), int(batch))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-mib", type=float, default=64)
    parser.add_argument("--cap-mib", type=float, default=16)
    parser.add_argument("--workdir", default="/tmp/ldlm_streaming_rss")
    parser.add_argument("--out", default="results/streaming_rss.json")
    args = parser.parse_args()
    result = measure(args.corpus_mib, args.cap_mib, Path(args.workdir))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
