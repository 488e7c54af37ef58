#!/usr/bin/env python3
"""Regenerates the documentation that comes from the code's own tables.

    tools/gen-docs.py [--check] [--bin BUILD_DIR]

Fills the GENERATED sections of proto/PROTOCOL.md (message tables) and
README.md (configuration reference), and writes config/parley.example.jsonc
(every setting at its default with a sentence above it). With --check it
changes nothing and fails if any of them is out of date.
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(ctl, *args):
    return subprocess.run([ctl] + list(args), check=True, capture_output=True, text=True).stdout


def fill(text, name, body):
    pattern = re.compile(r"(<!-- BEGIN GENERATED: %s -->\n).*?(<!-- END GENERATED -->)"
                         % re.escape(name), re.S)
    if not pattern.search(text):
        raise SystemExit("no GENERATED section '%s'" % name)
    return pattern.sub(lambda m: m.group(1) + body.strip("\n") + "\n" + m.group(2), text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    ctl = os.path.join(args.bin, "tools", "parleyctl")
    targets = {
        os.path.join(ROOT, "proto", "PROTOCOL.md"):
            lambda t: fill(t, "parleyctl proto reference", run(ctl, "proto", "reference")),
        os.path.join(ROOT, "README.md"):
            lambda t: fill(t, "parleyctl config reference", run(ctl, "config", "reference")),
        os.path.join(ROOT, "config", "parley.example.jsonc"):
            lambda t: run(ctl, "config", "sample"),
    }
    stale = []
    for path, make in targets.items():
        old = open(path).read() if os.path.exists(path) else ""
        new = make(old)
        if new != old:
            stale.append(os.path.relpath(path, ROOT))
            if not args.check:
                with open(path, "w") as f:
                    f.write(new)
    if args.check:
        if stale:
            print("out of date (run tools/gen-docs.py): %s" % ", ".join(stale))
            print("0 passed, 1 failed")
            sys.exit(1)
        print("generated documentation is current")
    else:
        print("updated: %s" % (", ".join(stale) or "nothing"))


if __name__ == "__main__":
    main()
