"""Untrusted files and inputs (issue 11), one place: each test names the class of bad
input it covers. Security first: no weight file, by any route, runs pickled code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reenactbench.cli import app
from reenactbench.errors import InputError
from reenactbench.weights import WEIGHTS
from tests.synthetic import write_folder_dataset


class _Evil:
    """A pickle that runs ``touch MARKER`` when it is fully unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """(a malicious checkpoint in each official layout at once, its marker file)."""
    marker = tmp_path / "PWNED"
    payload = _Evil(marker)
    path = tmp_path / "evil.pt"
    torch.save(
        {k: payload for k in ("generator", "kp_detector", "gen", "g_ema", "latent_avg",
                              "G_ema", "format", "config", "encoder", "net_G_ema")},
        path,
    )  # fmt: skip
    return path, marker


def _loaders() -> dict[str, object]:
    """Weight name -> a call that loads a file as that weight (None: no loader yet)."""
    from reenactbench.methods import load_method
    from reenactbench.metrics.fvd import load_i3d
    from reenactbench.metrics.inception import load_fid_inception
    from reenactbench.metrics.lpips import load_lpips_alex
    from reenactbench.nn.irse50 import load_irse50
    from reenactbench.nn.stylegan2 import load_generator

    def method(name: str, weight: str):
        return lambda p: load_method(name, weights={weight: p, "lpips-alex": p})

    return {
        "fid-inception": load_fid_inception,
        "lpips-alex": load_lpips_alex,
        "i3d": load_i3d,
        "arcface-r50": None,  # ONNX: onnxruntime parses protobuf, no pickle
        "ir-se50": load_irse50,
        "stylegan2-ffhq": load_generator,
        "fomm-vox": method("fomm", "fomm-vox"),
        "lia-vox": method("lia", "lia-vox"),
        "pirenderer-vox": None,  # no adapter yet (issue 13)
        "deep3d-recon": None,
        "styleheat": None,
        "fsvid2vid": None,
        "hybrid-hdtf": method("hybrid", "hybrid-hdtf"),
        "hybrid-hdtf-no-idreg": method("hybrid-no-idreg", "hybrid-hdtf-no-idreg"),
        "hybrid-hdtf-no-hybrid": method("hybrid-no-hybrid", "hybrid-hdtf-no-hybrid"),
    }


def test_every_weight_loader_refuses_pickled_code(evil: tuple[Path, Path]) -> None:
    path, marker = evil
    loaders = _loaders()
    assert set(loaders) == set(WEIGHTS), "a new weight needs a loader here"
    for name, load in loaders.items():
        if load is None:
            continue
        with pytest.raises(InputError, match=str(path)):
            load(path)  # type: ignore[operator]
        assert not marker.exists(), f"{name}: loading ran the pickle's code"


@pytest.mark.parametrize(
    "route",
    [
        ["reenact", "--method", "fomm", "--weights", "fomm-vox={evil}"],
        ["reenact", "--method", "lia", "--weights", "lia-vox={evil}"],
        ["reenact", "--method", "fomm", "--option", "checkpoint={evil}"],
        ["reenact", "--method", "lia", "--option", "checkpoint={evil}"],
        ["reenact", "--method", "hybrid-no-cma", "--option", "checkpoint={evil}"],
        ["import", "fomm-vox"],
        ["import", "lia-vox"],
        ["weights", "convert", "{evil}", "{out}"],
    ],
)
def test_no_cli_route_runs_pickled_code(
    route: list[str], evil: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, marker = evil
    monkeypatch.setenv("REENACTBENCH_HOME", str(tmp_path / "home"))
    data = write_folder_dataset(tmp_path / "data", ["a_000"], n=2, size=32)
    frame = data / "a_000" / "000000.png"
    reenact = ["reenact", "--source", str(frame), "--driving", str(data / "a_000"),
               "--out", str(tmp_path / "o")]  # fmt: skip
    if route[0] == "import":  # bring the file into the cache, then use it
        CliRunner().invoke(app, ["weights", "import", "--force", route[1], str(path)])
        method = route[1].split("-")[0]
        args = [*reenact, "--method", method]
    elif route[0] == "reenact":
        args = [*reenact, *(a.format(evil=path) for a in route[1:])]
    else:
        args = [a.format(evil=path, out=tmp_path / "out.pt") for a in route]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert not marker.exists()


def test_fetch_and_import_check_the_format_before_installing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`weights fetch NAME --url file:///etc/passwd` installed any file with exit 0."""
    home = tmp_path / "home"
    monkeypatch.setenv("REENACTBENCH_HOME", str(home))
    text = tmp_path / "notes.txt"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for args in (
        ["weights", "fetch", "fid-inception", "--url", f"file://{text}"],
        ["weights", "import", "fid-inception", str(text)],
        ["weights", "import", "--force", "ir-se50", str(text)],
        ["weights", "import", "i3d", str(text)],
        ["weights", "import", "arcface-r50", str(text)],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "is not a" in errors[0], result.stderr
    assert not any(p.is_file() for p in home.rglob("*"))  # nothing installed, no .part left
    good = tmp_path / "model_ir_se50.pth"
    torch.save({"w": torch.zeros(3)}, good)  # the right format (layout checked at load)
    result = CliRunner().invoke(app, ["weights", "import", "ir-se50", str(good)])
    assert result.exit_code == 0, result.output
