"""Upload memory: the API's resident memory while parallel tokenizer uploads are parsed.

Starts `tokengraft serve --no-worker` (SQLite, a temp data folder), builds a byte-level BPE
tokenizer.json of about `--mb` MB (a vocabulary of long tokens, each made by one merge, as a
real BPE's vocabulary is), posts it `--parallel` times at once, and samples the server
process's RSS every 50 ms: before the uploads (baseline), the highest while they run (peak;
also with its child processes', where the checks run), and `--settle` seconds after the last
answer (after). Prints one JSON line.

    nice -n 10 .venv/bin/python bench/upload_memory.py [--mb 59] [--parallel 4] [--settle 5]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from polling import Server

MAX_TOKEN = 64  # characters: long tokens make a file of tens of MB within the vocabulary limit
BYTE_LEVEL = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": True,
    "use_regex": True,
}


def byte_alphabet() -> list[str]:
    """GPT-2's byte-level alphabet: one printable character for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    return [chr(b if b in printable else next(extra)) for b in range(256)]


def tokenizer_json(target_bytes: int, seed: int = 0) -> bytes:
    """A byte-level BPE tokenizer.json of about `target_bytes`: each new token merges two
    earlier ones (so every merge is valid), until the file is large enough."""
    rng = random.Random(seed)
    tokens = byte_alphabet()
    vocab = {t: i for i, t in enumerate(tokens)}
    merges: list[list[str]] = []
    size = 0
    while size < target_bytes:
        a, b = rng.choice(tokens), rng.choice(tokens)
        if len(a) + len(b) > MAX_TOKEN or a + b in vocab:
            continue
        vocab[a + b] = len(tokens)
        tokens.append(a + b)
        merges.append([a, b])
        size += 2 * len((a + b).encode()) + 20  # its vocabulary entry and its merge, in JSON
    spec = {
        "version": "1.0",
        "added_tokens": [],
        "pre_tokenizer": BYTE_LEVEL,
        "decoder": BYTE_LEVEL,
        "model": {"type": "BPE", "vocab": vocab, "merges": merges},
    }
    return json.dumps(spec, ensure_ascii=False).encode()


class Sampler:
    """The process's RSS, and with its children's (the forked checks), every `interval`
    seconds, in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[int, int]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            own = self.process.memory_info().rss
            self.samples.append((own, own + sum(map(_rss, self.process.children(recursive=True)))))

    def rss(self) -> int:
        return self.process.memory_info().rss


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.NoSuchProcess:  # a check that ended between the listing and the reading
        return 0


def post(url: str, path: Path) -> tuple[int, float]:
    started = time.monotonic()
    with path.open("rb") as f:
        response = httpx.post(
            f"{url}/tokenizers", files={"file": ("tokenizer.json", f)}, timeout=900
        )
    return response.status_code, time.monotonic() - started


def measure(mb: float, parallel: int, settle: float) -> dict:
    mib = 2**20
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "tokenizer.json"
        file.write_bytes(tokenizer_json(int(mb * 1e6)))
        server = Server(Path(tmp) / "data", None, worker=False)
        try:
            sampler = Sampler(server.proc.pid)
            time.sleep(2)
            baseline = sampler.rss()
            sampler.thread.start()
            with ThreadPoolExecutor(parallel) as pool:
                answers = list(pool.map(lambda _: post(server.url, file), range(parallel)))
            time.sleep(settle)
            after = sampler.rss()
            sampler.stopped.set()
            peak = max(own for own, _ in sampler.samples)
            tree = max(with_children for _, with_children in sampler.samples)
        finally:
            server.stop()
        return {
            "upload_mb": round(file.stat().st_size / 1e6, 1),
            "parallel": parallel,
            "statuses": [status for status, _ in answers],
            "seconds": [round(seconds, 1) for _, seconds in answers],
            "baseline_mib": round(baseline / mib),
            "peak_mib": round(peak / mib),
            "peak_with_children_mib": round(tree / mib),
            "after_mib": round(after / mib),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=59.0, help="size of the tokenizer.json")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before `after`")
    args = parser.parse_args()
    print(json.dumps(measure(args.mb, args.parallel, args.settle)))


if __name__ == "__main__":
    main()
