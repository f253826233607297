"""train.pretrained (`headtex pretrained`): a trained model -> fp16 checkpoint (<= 16 MB) + provenance JSON."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch
import yaml

from conftest import run_headtex
from headtex.inpaint import Critic, build_generator
from headtex.inpaint.model import load_inpainter, save_inpainter
from headtex.io import UserError, write_json
from headtex.train.pretrained import MAX_BYTES, export_pretrained

COMMAND = "dvc exp run -S faces.identities=600 -S model.arch=symres"


@pytest.fixture
def trained(tmp_path):
    """A tiny trained-looking model, a dvc.lock, eval.json and dvclive summary, in a git checkout."""
    torch.manual_seed(0)
    save_inpainter(tmp_path / "inpainter.pt", build_generator("symres", 4, 32), 4, "coarse", 32, critic=Critic(4))
    lock = {"schema": "2.0", "stages": {"train": {"cmd": "headtex train", "deps": [
        {"path": "data/textures/train", "md5": "abc.dir"}, {"path": "src/headtex/cli.py", "md5": "ff"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    write_json(tmp_path / "eval.json", {"ship_output": "coarse", "samples": 4, "by_bucket": {"overall": {"count": 4}},
                                        "by_kind": {}})
    write_json(tmp_path / "summary.json", {"steps": 3})
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


def export(root, name="tiny", command=COMMAND):
    return export_pretrained(root / "inpainter.pt", name, root / "pretrained", command, root, root / "dvc.lock",
                             root / "eval.json", root / "summary.json")


def test_export_writes_an_fp16_checkpoint_that_loads_and_its_provenance(trained):
    pt, provenance_path = export(trained)
    stored = torch.load(pt, weights_only=True)
    assert {v.dtype for v in stored["generator"].values()} == {torch.float16}
    assert {v.dtype for v in stored["critic"].values()} == {torch.float16}
    assert pt.stat().st_size <= MAX_BYTES
    generator, info = load_inpainter(pt)
    assert info["arch"] == "symres" and info["uv_size"] == 32
    provenance = json.loads(provenance_path.read_text())
    assert provenance["command"] == COMMAND
    assert provenance["data"] == {"data/textures/train": "abc.dir"}  # data only, not code
    assert provenance["eval"]["by_bucket"] == {"overall": {"count": 4}}
    assert provenance["train"] == {"steps": 3}
    assert provenance["file"]["bytes"] == pt.stat().st_size and provenance["file"]["dtype"] == "float16"
    assert "commit" in provenance["git"]


def test_shipped_size_of_the_default_symres_fits(tmp_path):
    """The recommended shipped model (symres, latent 32 at 192 texels) stays under 16 MB in fp16."""
    save_inpainter(tmp_path / "m.pt", build_generator("symres", 32, 192), 32, "coarse", 192, critic=Critic(32),
                   half=True)
    assert (tmp_path / "m.pt").stat().st_size <= MAX_BYTES


def test_bad_name_or_command_is_refused(trained):
    with pytest.raises(UserError, match="a checkpoint name is letters"):
        export(trained, name="../x")
    with pytest.raises(UserError, match="the exact `dvc exp run -S ...` line"):
        export(trained, command="headtex train")


def test_the_command_writes_both_files(trained, monkeypatch, capsys):
    monkeypatch.chdir(trained)
    code, out, err = run_headtex(monkeypatch, capsys, "pretrained", "tiny", "--command", COMMAND, "--model",
                                 "inpainter.pt", "--eval", "eval.json", "--train-summary", "summary.json")
    assert code == 0, err
    assert (trained / "models" / "pretrained" / "tiny.pt").is_file()
    assert (trained / "models" / "pretrained" / "tiny.json").is_file()


def test_the_shipped_checkpoint_is_what_params_yaml_starts_from_and_its_provenance_holds():
    """models/pretrained/: the file train.init_from names loads with params.yaml's arch, latent and uv size, is at
    most 16 MB, matches the sha256 its provenance states, and was trained on identities of another faces.seed."""
    import hashlib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    path = repo / params["train"]["init_from"]
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert path.stat().st_size <= MAX_BYTES
    assert provenance["file"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert provenance["model"] == {"arch": params["model"]["arch"], "latent": params["model"]["latent"],
                                   "ship_output": "coarse", "uv_size": params["uv"]["size"]}
    generator, info = load_inpainter(path)
    assert info["arch"] == params["model"]["arch"] and sum(p.numel() for p in generator.parameters()) > 0
    assert provenance["command"].startswith("dvc exp run ")
    assert f"faces.seed={params['faces']['seed']}" not in provenance["command"]  # other people than the test set's
    assert "faces.seed=" in provenance["command"]
