#!/usr/bin/env python3
"""Frees the build caches that CI reuses before it builds.

CI builds a fresh clone, so this workspace's own crates (the server, the load generator, the
fuzz crate, the patched copies under vendor/, and every test, bench and example of them) are
rebuilt on every run whatever the cache holds; only the dependencies' artifacts are reused.
Each clone path leaves a full set of its own, though (one set of test binaries is several GB),
and a machine that had built at several paths ran out of disk half-way through a CI run.
So this deletes the workspace's artifacts, which costs no build time, and, when the disk is
still short of what a build needs, the optimized builds CI does not make.

    .ci/prune_target.py DIR...    the target directories to prune (missing ones are skipped)
"""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a CI run writes into an empty cache: the test build, clippy's and the fuzz build.
NEEDED_GB = 30
# Optimized builds (benchmarks) that CI's own steps never reuse.
OPTIMIZED = ("release", "x86_64-unknown-linux-gnu/release")
FUZZ_RELEASE = "x86_64-unknown-linux-gnu/release"
HASHED = re.compile(r"^(?:lib)?(?P<name>.+?)-[0-9a-f]{16}(?:\..+)?$")


def workspace_names():
    """Package names and target names (as rustc spells them) of every crate built from here."""
    packages = []
    for manifest in (ROOT / "Cargo.toml", ROOT / "fuzz" / "Cargo.toml"):
        if not manifest.exists():
            continue
        out = subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline",
             "--manifest-path", str(manifest)],
            check=True, capture_output=True, text=True).stdout
        packages += json.loads(out)["packages"]
    names = set()
    for package in packages:
        names.add(package["name"].replace("-", "_"))
        for target in package["targets"]:
            names.add(target["name"].replace("-", "_"))
    for vendored in (ROOT / "vendor").glob("*/Cargo.toml"):
        with vendored.open("rb") as f:
            names.add(tomllib.load(f)["package"]["name"].replace("-", "_"))
    return names


def free_gb(path):
    return shutil.disk_usage(path).free / 2**30


def prune(target, names):
    """Deletes the workspace's artifacts under one target directory; returns bytes freed."""
    freed = 0
    profiles = [p for p in target.glob("*") if (p / "deps").is_dir()]
    profiles += [p for p in target.glob("*/*") if (p / "deps").is_dir()]
    for profile in profiles:
        for kind in ("deps", ".fingerprint", "build", "incremental", "examples"):
            if not (profile / kind).is_dir():
                continue
            for entry in list((profile / kind).iterdir()):
                match = HASHED.match(entry.name)
                if match and match["name"].replace("-", "_") in names:
                    freed += remove(entry)
    return freed


def remove(entry):
    if entry.is_dir() and not entry.is_symlink():
        size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        shutil.rmtree(entry, ignore_errors=True)
    else:
        size = entry.stat().st_size if entry.exists() else 0
        entry.unlink(missing_ok=True)
    return size


def main(targets):
    targets = [Path(t) for t in targets if Path(t).is_dir()]
    names = workspace_names()
    for target in targets:
        freed = prune(target, names)
        print(f"prune: {target}: {freed / 2**30:.1f} GB of this workspace's artifacts deleted")
    probe = targets[0] if targets else ROOT
    for target in targets:
        if free_gb(probe) >= NEEDED_GB:
            break
        for optimized in OPTIMIZED:
            path = target / optimized
            if path.is_dir() and target.name != "fuzz-target":
                shutil.rmtree(path, ignore_errors=True)
                print(f"prune: {path} deleted (the disk was short of {NEEDED_GB} GB)")
    free = free_gb(probe)
    print(f"prune: {free:.0f} GB free for the build")
    if free < NEEDED_GB:
        print(f"prune: warning: less than {NEEDED_GB} GB free; the build may run out of disk",
              file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
