"""Peak memory of `tunewise audit` on a ~300 MB valid JSONL file and ~300 MB of bad lines (`--json`).

    python bench/bench_audit.py [--mb 300] [--dir /tmp] [--only valid|bad]

Both files are generated in a temporary folder (deleted at the end), with a fixed seed:
  valid  chat records of ~330 bytes (system prompt, an 18-word question, an 8-word answer): ~1M examples
  bad    ~300-byte lines, every one bad: wrong roles, invalid JSON, other formats, lone surrogates,
         invalid UTF-8, non-objects, missing keys, and every 1,000th line 5,000 nested objects or a
         5,000-digit integer
Each command runs in its own child process; its peak RSS is the child's ru_maxrss (os.wait4), so
nothing of this script's own memory counts. Baselines measured in the same run: the file size; a
`python -c` that reads the file with json.loads line by line (streaming, holding nothing); and
`tunewise audit` on a 3-line file (the interpreter plus tunewise's imports). Target (issue 16): the
audit stays under 300 MB peak RSS on either file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MB = 300
WORDS = (
    "apple river stone quiet orange window pencil garden music yellow travel silver engine forest cloud "
    "button rocket lemon castle marble tiger planet candle mirror violin desert harbor ladder bridge copper "
    "meadow falcon puzzle lantern"
).split()
AUDIT = [sys.executable, "-c", "import sys; from tunewise.cli import main; main(sys.argv[1:])", "audit"]
BASELINE = (
    "import json, sys\n"
    "n = 0\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for raw in f:\n"
    "        try:\n"
    "            json.loads(raw)\n"
    "            n += 1\n"
    "        except (ValueError, RecursionError):\n"  # invalid JSON or UTF-8, huge integers; deep nesting
    "            pass\n"
    "print(n)\n"
)


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_valid(path: Path, size: int, rng: random.Random, batch: int = 10_000) -> int:
    """Chat records of ~330 bytes until the file reaches `size` bytes; returns the number of records."""
    n = 0
    with path.open("w", encoding="utf-8") as f:
        while f.tell() < size:
            for _ in range(batch):
                question, answer = f"{sentence(rng, 18)} #{n}", sentence(rng, 8)
                f.write(
                    '{"messages": [{"role": "system", "content": "You are a helpful assistant."}, '
                    f'{{"role": "user", "content": "{question}"}}, {{"role": "assistant", "content": "{answer}"}}]}}\n'
                )
                n += 1
    return n


def bad_line(rng: random.Random, i: int) -> bytes:
    """One ~300-byte bad line; the kind cycles, the rare costly kinds come every 1,000th line."""
    text = sentence(rng, 30)
    if i % 1000 == 999:
        if i % 2000 == 999:
            return b'{"a": ' * 5000 + b"1" + b"}" * 5000
        return b'{"prompt": ' + b"9" * 5000 + b', "completion": "a"}'
    kind = i % 8
    if kind == 0:
        return f'{{"messages": [{{"role": "user", "content": "{text}"}}, {{"role": "bot", "content": "x"}}]}}'.encode()
    if kind == 1:
        return f'{{"messages": [{{"role": "user", "content": "{text}'.encode()  # cut off: invalid JSON
    if kind == 2:
        return f'{{"prompt": "{text}", "completion": 42}}'.encode()  # another format
    if kind == 3:
        return (
            f'{{"messages": [{{"role": "user", "content": "{text} \\ud800"}}, '
            '{"role": "assistant", "content": "a"}]}'
        ).encode()
    if kind == 4:
        return f'{{"messages": [{{"role": "user", "content": "{text} '.encode() + b'\xff\xfe"}]}'
    if kind == 5:
        return f'["{text}"]'.encode()
    if kind == 6:
        return f'{{"msgs": "{text}"}}'.encode()
    return (
        f'{{"messages": [{{"role": "user", "content": [{{"type": ["text"], "text": "{text}"}}]}}, '
        '{"role": "assistant", "content": "a"}]}'
    ).encode()


def write_bad(path: Path, size: int, rng: random.Random) -> int:
    n = 0
    with path.open("wb") as f:
        while f.tell() < size:
            for _ in range(10_000):
                f.write(bad_line(rng, n) + b"\n")
                n += 1
    return n


def measure(command: list[str], stdout: Path | None = None) -> tuple[float, float, int, str]:
    """(peak RSS MiB, seconds, exit code, last line of stderr) of one child process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err, open(stdout or os.devnull, "wb") as out:
        child = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    return usage.ru_maxrss / 1024, time.perf_counter() - start, child.returncode, tail[0][:160]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="size of each generated file in MB (default 300)")
    parser.add_argument("--dir", help="where to generate the files (default: the system temp folder)")
    parser.add_argument("--only", choices=["valid", "bad"], help="measure one of the two files")
    args = parser.parse_args()
    rng = random.Random(16)
    size = args.mb * 1_000_000
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    failed = False
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-audit-") as folder:
        small = Path(folder) / "small.jsonl"
        write_valid(small, 1, rng, batch=3)
        base, secs, code, _ = measure([*AUDIT, str(small), "--json"])
        print(f"import baseline: tunewise audit on a 3-line file: {base:.0f} MiB peak RSS, {secs:.1f} s")
        for name, writer, extra, expected in (
            ("valid", write_valid, [], 0),
            ("bad lines", write_bad, ["--format", "chat"], 1),
        ):
            if args.only and not name.startswith(args.only):
                continue
            path = Path(folder) / f"{name.replace(' ', '_')}.jsonl"
            start = time.perf_counter()
            lines = writer(path, size, rng)
            mib = path.stat().st_size / 2**20
            print(f"\n{name}: {mib:.0f} MiB, {lines:,} lines (generated in {time.perf_counter() - start:.0f} s)")
            rss, secs, code, _ = measure([sys.executable, "-c", BASELINE, str(path)])
            print(f"  baseline  python json.loads per line: {rss:6.0f} MiB peak RSS, {secs:5.0f} s")
            report_path = Path(folder) / "report.json"
            rss, secs, code, tail = measure([*AUDIT, str(path), "--json", *extra], stdout=report_path)
            verdict = "ok" if rss * 2**20 < TARGET_MB * 1e6 and code == expected else "FAIL"
            failed |= verdict != "ok"
            print(
                f"  tunewise audit --json {' '.join(extra)}: {rss:6.0f} MiB peak RSS, {secs:5.0f} s, exit {code} "
                f"(expected {expected}); {(rss - base) * 2**20 / lines:.0f} bytes a line above the import baseline; "
                f"target < {TARGET_MB} MB: {verdict}"
            )
            if code not in (0, 1):
                print(f"  stderr: {tail}")
            else:
                report = json.loads(report_path.read_text(encoding="utf-8"))
                print(
                    f"  the report: {report['train_examples']:,} examples, {report['error_count']:,} errors on "
                    f"{report['error_lines']:,} lines {report['error_counts']}, {len(report['errors']):,} errors kept"
                )
            path.unlink()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
