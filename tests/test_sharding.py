"""Kills and torchrun: a run killed with SIGKILL anywhere resumes to byte-identical
tables; 2 gloo ranks on CPU give the same tables as one process; a rank killed mid-run
loses nothing that was done; bad starts fail with one line (issue 10)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reenactbench.lock import RunLock
from tests.synthetic import write_folder_dataset, write_protocol

pytestmark = pytest.mark.slow

NAMES = ["a_000", "a_001", "b_000", "b_001", "c_000"]
FILES = ("summary.csv", "per_video.csv", "pairs.csv")
PLUGIN = textwrap.dedent('''
    """A method that can be killed at a chosen (rank, job, frame), and a cheap
    distribution metric (mean colour features) so that pooled Frechet values are merged
    across ranks too."""
    import os, signal, time
    import numpy as np
    from reenactbench.metrics import MetricSpec, register_metric
    from reenactbench.metrics.base import JobPart

    class Killable:
        name, resolution, weights = "killable", 32, ()

        def __init__(self, device="cpu", weights=None):
            self.jobs = 0

        def reenact(self, source, driving):
            self.jobs += 1
            with open(os.environ["CALLS"], "a") as f:
                f.write(os.environ.get("RANK", "0") + "\\n")
            kill = os.environ.get("KILL_AT")  # rank:job:frame
            for i, frame in enumerate(driving):
                if kill == f"{os.environ.get('RANK', '0')}:{self.jobs}:{i}":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(float(os.environ.get("FRAME_SLEEP", "0")))
                yield (source // 2 + frame // 2)

    class Colour:
        def begin(self, source):
            self.rows = ([], [])
        def add(self, fake, real):
            for frames, out in zip((fake, real), self.rows):
                m = frames.reshape(len(frames), -1, 3).mean(axis=1)
                out.append(np.concatenate([m, m ** 2 / 255], axis=1))
        def end(self):
            return JobPart(fake=np.concatenate(self.rows[0]), real=np.concatenate(self.rows[1]))

    register_metric(MetricSpec("colour_fd", "CFD", False, "", "distribution",
                               build=lambda ctx: Colour()), replace=True)
''')


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharding")
    (root / "plug").mkdir()
    (root / "plug" / "killplug.py").write_text(PLUGIN)
    data = write_folder_dataset(root / "data", NAMES, n=5, size=32)
    proto = write_protocol(root, "same-id", resolution=64, metrics=["l1", "psnr", "colour_fd"])
    return {"root": root, "data": data, "proto": proto}


def _env(setup: dict[str, Path], calls: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "KILL_AT")}
    env["PYTHONPATH"] = os.pathsep.join([str(setup["root"] / "plug"), os.getcwd()])
    env["CALLS"] = str(calls)
    return {**env, **extra}


def _args(setup: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["-m", "reenactbench", "--quiet", "run", "same-id", "--data", str(setup["data"]),
            "--protocol", str(setup["proto"]), "-m", "killplug:Killable", "-m", "static",
            "--out", str(out), *extra]  # fmt: skip


def _cli(setup, out, calls, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *_args(setup, out)], env=_env(setup, calls, **env),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _torchrun(setup, out, calls, n=2, script=None, **env) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
              f"--nproc-per-node={n}"]  # fmt: skip
    args = _args(setup, out)
    cmd = [*launch, str(script), *args[2:]] if script else [*launch, *args]
    return subprocess.run(
        cmd, env=_env(setup, calls, **env), capture_output=True, text=True, timeout=300
    )


def _calls(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture(scope="module")
def reference(setup: dict[str, Path]) -> Path:
    out = setup["root"] / "reference"
    result = _cli(setup, out, setup["root"] / "ref_calls")
    assert result.returncode == 0, result.stderr
    return out


def _same_tables(a: Path, b: Path) -> None:
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_anywhere_resumes_to_identical_tables(
    setup: dict[str, Path], reference: Path, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    out, calls = tmp_path / "run", tmp_path / "calls"
    job, frame = rng.randint(1, 5), rng.randint(0, 4)
    killed = _cli(setup, out, calls, KILL_AT=f"0:{job}:{frame}")
    assert killed.returncode == -signal.SIGKILL
    assert len(_calls(calls)) == job  # killed inside job `job`
    # a second kill from outside, at a random moment (during a job or a record write)
    cmd = [sys.executable, *_args(setup, out)]
    proc = subprocess.Popen(cmd, env=_env(setup, calls, FRAME_SLEEP="0.02"))
    time.sleep(rng.uniform(2.0, 4.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n = len(_calls(calls))
    done = len(list((out / "cache" / "killable").glob("*/job.npz")))
    resumed = _cli(setup, out, calls)
    assert resumed.returncode == 0, resumed.stderr
    assert len(_calls(calls)) - n == 5 - done  # only unfinished jobs ran again
    _same_tables(out, reference)
    assert not list(out.rglob("*.tmp"))


def test_two_gloo_ranks_equal_one_process(
    setup: dict[str, Path], reference: Path, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    result = _torchrun(setup, tmp_path / "run", calls)
    assert result.returncode == 0, result.stderr
    _same_tables(tmp_path / "run", reference)
    assert sorted(_calls(calls)) == ["0", "0", "0", "1", "1"]  # 10 jobs over 2 ranks


def test_killed_rank_restarts_without_recomputing_finished_jobs(
    setup: dict[str, Path], reference: Path, tmp_path: Path
) -> None:
    out, calls = tmp_path / "run", tmp_path / "calls"
    killed = _torchrun(setup, out, calls, KILL_AT="1:2:3")
    assert killed.returncode != 0
    done = len(list((out / "cache" / "killable").glob("*/job.npz")))
    assert 1 <= done < 5
    n = len(_calls(calls))
    result = _torchrun(setup, out, calls)
    assert result.returncode == 0, result.stderr
    assert len(_calls(calls)) - n == 5 - done
    _same_tables(out, reference)


def _errors(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_bad_sharded_starts_fail_with_one_line(
    setup: dict[str, Path], reference: Path, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    script = tmp_path / "no_data_on_rank1.py"
    script.write_text(
        textwrap.dedent("""
        import os, sys
        from reenactbench.cli import main
        if os.environ["RANK"] == "1":  # as if node 2 did not mount the data
            sys.argv[sys.argv.index("--data") + 1] = "/nonexistent/data"
        main()
    """)
    )
    result = _torchrun(setup, tmp_path / "a", calls, script=script)
    assert result.returncode != 0
    assert _errors(result) == [
        "error: rank 1 ("
        + os.uname().nodename
        + "): /nonexistent/data: data folder not found; pass --data DIR (see docs/data.md)"
    ]
    assert not (tmp_path / "a").exists()
    out = tmp_path / "locked"
    out.mkdir()
    with RunLock(out):
        result = _torchrun(setup, out, calls)
    assert result.returncode != 0 and len(_errors(result)) == 1
    assert f"in use by pid {os.getpid()}" in _errors(result)[0]
    before = (reference / "summary.csv").read_bytes()
    other = write_protocol(tmp_path, "same-id", resolution=64, metrics=["l1"], frames=4)
    cmd = [*_args(setup, reference)[2:]]
    cmd[cmd.index("--protocol") + 1] = str(other)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "reenactbench", *cmd],
        env=_env(setup, calls), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0 and len(_errors(result)) == 1
    assert "holds a run with a different protocol" in _errors(result)[0]
    assert (reference / "summary.csv").read_bytes() == before
