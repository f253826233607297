"""params.yaml, declared once: every key typed, ranged and explained in one dataclass; one line per mistake."""
from __future__ import annotations

import dataclasses
import sys

import pytest
import yaml

from conftest import REPO
from headtex.blend.core import BlendParams
from headtex.evaluate.cli import EvaluateParams
from headtex.faces.core import FacesParams
from headtex.fitting import FitParams
from headtex.geometry.uv import UVParams
from headtex.inpaint.model import ModelParams
from headtex.io import UserError
from headtex.masks.core import MasksParams
from headtex.pafs.core import PafsParams
from headtex.params import load_params, section
from headtex.photos import PhotosParams
from headtex.reconstruct.core import ReconstructParams
from headtex.stylegan.core import StyleganParams
from headtex.template.cli import TemplateParams
from headtex.train.core import TrainParams

# What each stage reads: (section, declaration, whole section?). reconstruct reads only the fitting keys of pafs.
READS = {
    "template": [("uv", UVParams, True), ("template", TemplateParams, True)],
    "stylegan": [("stylegan", StyleganParams, True)],
    "faces": [("faces", FacesParams, True)],
    "pafs": [("pafs", PafsParams, True)],
    "masks": [("masks", MasksParams, True)],
    "blend": [("blend", BlendParams, True)],
    "train": [("model", ModelParams, True), ("train", TrainParams, True)],
    "evaluate": [("evaluate", EvaluateParams, True), ("pafs", FitParams, False)],
    "reconstruct": [("reconstruct", ReconstructParams, True), ("photos", PhotosParams, True),
                    ("pafs", FitParams, False)],
    "summary": [],  # reads only the stages' metrics files
}


def keys_read(stage: str) -> set[str]:
    """The params keys a stage's declarations read: whole sections by name, others key by key, shared keys."""
    keys = set()
    for name, cls, whole in READS[stage]:
        for field in dataclasses.fields(cls):
            shared = field.metadata.get("shared")
            keys.add(shared if shared else (name if whole else f"{name}.{field.name}"))
    return keys


def test_params_yaml_and_the_declarations_agree():
    """Every section builds from params.yaml: no key without a declaration, no declaration without a value."""
    params = load_params(REPO / "params.yaml")
    for reads in READS.values():
        for name, cls, whole in reads:
            section(params, name, cls, partial=not whole)
    declared = {name for reads in READS.values() for name, _, _ in reads}
    assert set(params) == declared  # nothing in params.yaml that nothing reads


@pytest.mark.parametrize("stage", READS)
def test_dvc_yaml_declares_exactly_the_params_a_stage_reads(stage):
    """A changed value reruns every stage that reads it and no other."""
    declared = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage].get("params", []))
    assert declared == keys_read(stage)


def test_every_key_says_what_it_means():
    for reads in READS.values():
        for _, cls, _ in reads:
            assert all(f.metadata.get("meaning") for f in dataclasses.fields(cls)), cls.__name__


@pytest.mark.parametrize("command, edit, message", [
    ("faces", {"faces": {"identities": "abc"}}, "params.yaml: faces.identities must be an integer (synthetic "
                                                "identities (the thesis: 100,000)), got 'abc'"),
    ("faces", {"faces": {"identitys": 3}}, "params.yaml: unknown key faces.identitys"),
    ("faces", {"faces": {"identities": 0}}, "params.yaml: faces.identities must be >= 1, got 0"),
    ("faces", {"faces": {"source": "web"}}, "params.yaml: faces.source must be one of 'generated', 'synthetic', 'stylegan', "
                                            "'directory', 'eigengan', got 'web'"),
    ("faces", {"photos": {"alpha_background": [1, 2]}}, "photos.alpha_background must be [R, G, B]"),
    ("template", {"uv": {"size": 190}}, "params.yaml: [uv] size must be divisible by 4"),
    ("masks", {"masks": {"p_real": 1.5}}, "params.yaml: masks.p_real must be <= 1, got 1.5"),
])
def test_a_wrong_param_is_one_line_naming_the_key(tmp_path, monkeypatch, capsys, command, edit, message):
    """A stage with a mistaken params.yaml: exit 1 and one line naming the key, never a traceback."""
    from headtex.cli import main

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, values in edit.items():
        params[name].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setattr(sys, "argv", ["headtex", command, "--params", str(path), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and "\n" not in err and message in err


def test_yaml_quirks_are_handled_for_every_section():
    """YAML 1.1 reads 2e-4 as a string (and `dvc exp run -S` may write it so); an integral float is an int."""
    params = load_params(REPO / "params.yaml")
    params["train"].update(lr_g="2e-4", epochs=2.0)
    config = section(params, "train", TrainParams)
    assert config.lr_g == 2e-4 and config.epochs == 2 and isinstance(config.epochs, int)
    params["blend"]["max_seam_ratio"] = "4e0"
    assert section(params, "blend", BlendParams).max_seam_ratio == 4.0
    with pytest.raises(UserError, match="train.epochs must be an integer"):
        section({**params, "train": {**params["train"], "epochs": 2.5}}, "train", TrainParams)


def test_a_missing_key_or_shared_key_is_named(tmp_path):
    params = load_params(REPO / "params.yaml")
    del params["masks"]["p_real"]
    with pytest.raises(UserError, match=r"params.yaml: masks.p_real is missing \(chance that a training mask"):
        section(params, "train", TrainParams)
    with pytest.raises(UserError, match="must be a mapping"):
        section({"pafs": [1, 2]}, "pafs", PafsParams)


@pytest.mark.parametrize("override", ["train.lr_g=2e-3", "blend.method=thirds", "faces.identities=256",
                                      "masks.count=40", "template.source=/tmp/menpo3d-0.8.6.tar.gz"])
def test_dvc_exp_run_set_param_changes_one_line_of_params_yaml(tmp_path, override):
    """`dvc exp run -S` rewrites params.yaml through ruamel (null -> empty, long flow collections re-wrapped):
    params.yaml is written in the style it keeps, so one override is a one-line diff."""
    import difflib

    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    original = (REPO / "params.yaml").read_text()
    path.write_text(original)
    apply_overrides(str(path), [override])
    changed = [line for line in difflib.unified_diff(original.splitlines(), path.read_text().splitlines(), n=0,
                                                     lineterm="") if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    key, _, value = override.partition("=")
    assert len(changed) == 2, changed
    assert changed[1].lstrip("+").lstrip().startswith(f"{key.split('.')[1]}: ")
    top, _, leaf = key.partition(".")
    assert yaml.safe_load(path.read_text())[top][leaf] == yaml.safe_load(value.replace("e-", ".0e-"))
    reread = yaml.safe_load(path.read_text())
    reread[top][leaf] = yaml.safe_load(original)[top][leaf]
    assert reread == yaml.safe_load(original)  # nothing else changed value
