#!/usr/bin/env python3
"""Runs the documentation's checked snippets against a running `make watch`, as a reader
pastes them, and compares what they print with what the documentation shows.

    scripts/check-snippets.py PORT FILE...

A snippet is checked when an HTML comment starting `<!-- checked:` comes right before its
fenced block. In a `sh` block each command runs on its own (variables set by earlier lines
kept), and the `# ` lines under it are its output; in a `python` block the `# ` lines under
each `print(...)` are what it prints; the block runs as `try.py` with `.venv-try/bin/python`,
which the snippets before it install. `...` in a shown output stands for any text, and the
blank lines between a stream's events are left out. `localhost:9000` becomes the given port.
Runs in the current directory (scripts/watch-smoke.sh runs it in a fresh copy of the tree).
"""

import re
import subprocess
import sys


def checked_blocks(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].startswith("<!-- checked:"):
            start = i + 1
            fence = lines[start]
            assert fence.startswith("```"), f"{path}:{start + 1}: a checked comment must precede a block"
            end = lines.index("```", start + 1)
            blocks.append((f"{path}:{start + 1}", fence[3:].strip(), lines[start + 1:end]))
            i = end
        i += 1
    return blocks


def matches(shown, printed):
    printed = "\n".join(line.rstrip() for line in printed.split("\n") if line.strip())
    pattern = ".*?".join(re.escape(part) for part in shown.split("..."))
    return re.fullmatch(pattern, printed, re.DOTALL) is not None


def shown_after(lines, i):
    """The `# ` lines right after line i, as the output they show."""
    shown = []
    for line in lines[i + 1:]:
        if not line.startswith("# "):
            break
        shown.append(line[2:])
    return shown


def run_sh(where, lines, port, failures):
    setup = []
    for i, line in enumerate(lines):
        if not line.strip() or line.startswith("#"):
            continue
        command = line.replace("localhost:9000", f"localhost:{port}")
        script = "\n".join(setup + [command])
        run = subprocess.run(["bash", "-c", "set -eo pipefail\n" + script], capture_output=True, text=True, timeout=300)
        if re.fullmatch(r"[A-Z_]+=\S+", command):
            setup.append(command)
        shown = shown_after(lines, i)
        if run.returncode != 0:
            failures.append(f"{where}: `{line}` exited {run.returncode}: {run.stderr[-2000:]}")
        elif shown and not matches("\n".join(shown), run.stdout):
            failures.append(f"{where}: `{line}` printed\n{run.stdout}\nwhere the documentation shows\n" + "\n".join(shown))
        else:
            print(f"ok  {line[:100]}")


def run_python(where, lines, port, failures):
    shown = []
    for i, line in enumerate(lines):
        if line.lstrip().startswith("print("):
            shown += shown_after(lines, i)
    code = "\n".join(lines).replace("localhost:9000", f"localhost:{port}")
    open("try.py", "w", encoding="utf-8").write(code + "\n")
    run = subprocess.run([".venv-try/bin/python", "try.py"], capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        failures.append(f"{where}: try.py exited {run.returncode}: {run.stderr[-3000:]}")
    elif not shown or not matches("\n".join(shown), run.stdout):
        failures.append(f"{where}: try.py printed\n{run.stdout}\nwhere the documentation shows\n" + "\n".join(shown))
    else:
        print(f"ok  try.py ({where}): " + " | ".join(run.stdout.strip().split("\n")))


def main():
    port, paths = sys.argv[1], sys.argv[2:]
    failures, count = [], 0
    for path in paths:
        for where, language, lines in checked_blocks(path):
            count += 1
            if language == "sh":
                run_sh(where, lines, port, failures)
            elif language == "python":
                run_python(where, lines, port, failures)
            else:
                failures.append(f"{where}: no way to check a `{language}` block")
    if count == 0:
        failures.append("no checked snippet found in " + ", ".join(paths))
    for failure in failures:
        print("FAILED " + failure, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
