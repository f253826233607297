"""summary: the headline metrics, from the stages' real metrics files; one line for a missing or broken one."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from headtex.io import UserError
from headtex.summary.cli import SOURCES, run
from headtex.summary.core import CLASSICAL_FILLS, SUMMARY_KEYS, best_fill, summarise

REPO = Path(__file__).resolve().parents[1]


def copy_metrics(folder: Path) -> Path:
    folder.mkdir()
    for name in SOURCES.values():
        (folder / name).write_text((REPO / "metrics" / name).read_text())
    return folder


def test_headline_metrics_from_the_committed_metrics(tmp_path):
    """Every headline number is present and is the number its stage wrote."""
    summary = run(copy_metrics(tmp_path / "metrics"), tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert set(SUMMARY_KEYS) <= set(summary) and all(summary[key] is not None for key in SUMMARY_KEYS)
    source = {stage: json.loads((REPO / "metrics" / name).read_text()) for stage, name in SOURCES.items()}
    overall = source["evaluate"]["by_bucket"]["overall"]
    shipped = source["evaluate"]["ship_output"]
    # every classical fill the committed eval.json scored (mirror_poisson since symres)
    fills = {name: overall[name]["psnr"] for name in CLASSICAL_FILLS if name in overall}
    assert summary["best_fill"] == max(fills, key=fills.get)
    assert summary["fill_db"] == round(max(fills.values()), 2)
    assert summary["model_db"] == round(overall[shipped]["psnr"], 2)
    assert summary["gap_db"] == pytest.approx(overall[shipped]["psnr"] - max(fills.values()), abs=0.006)
    assert summary["ids"] == source["pafs"]["identities_kept"]
    assert summary["blend_db"] == round(source["blend"]["fidelity"][source["blend"]["method"]]["psnr_db"]["mean"], 2)
    for bucket in set(source["evaluate"]["by_bucket"]) - {"overall"}:
        assert summary[f"model_db_{bucket}"] == round(source["evaluate"]["by_bucket"][bucket][shipped]["psnr"], 2)
        assert f"fill_ssim_{bucket}" in summary
    # Short names no other metrics file uses, so that DVC shows them without a file prefix.
    for stage, name in SOURCES.items():
        flat = json.dumps(source[stage])
        assert not [key for key in SUMMARY_KEYS if f'"{key}"' in flat], name


def test_best_fill_per_bucket_and_missing_figures():
    scores = {"coarse": {"psnr": 20.0, "ssim": 0.5}, "telea": {"psnr": 25.0, "ssim": 0.8},
              "mirror": {"psnr": 26.0, "ssim": 0.7}}
    empty = {name: None for name in scores} | {"count": 0}  # no sample in this bucket: evaluate writes nulls
    evaluation = {"ship_output": "coarse", "test_textures": 2,
                  "by_bucket": {"overall": scores, "small": {**scores, "telea": {"psnr": 30.0, "ssim": 0.9}},
                                "large": {**empty, "coarse": {"psnr": None, "ssim": None},
                                          "telea": {"psnr": None, "ssim": None}}}}
    summary = summarise({}, {}, {"method": "visibility", "fidelity": "n/a (directory source)"}, evaluation,
                        {"photos": 2, "written": 1, "per_photo": {"a": {"landmark_residual_px": 3.0}}})
    assert summary["best_fill"] == "mirror" and summary["gap_db"] == -6.0 and summary["fill_ssim"] == 0.7
    assert summary["fill_db_small"] == 30.0 and summary["fill_ssim_small"] == 0.9  # the bucket's own best
    assert summary["model_db_large"] is None and summary["fill_db_large"] is None
    assert summary["blend_db"] is None and summary["paf_db"] is None and summary["ids"] is None
    assert summary["photos_ok"] == 0.5 and summary["photo_px"] == 3.0
    with pytest.raises(ValueError, match="no classical fill"):
        best_fill({"coarse": {"psnr": 1.0}})


def test_missing_or_broken_metrics_file_is_one_line(tmp_path):
    folder = copy_metrics(tmp_path / "metrics")
    (folder / "eval.json").unlink()
    with pytest.raises(UserError, match=r"eval.json: not found; run `dvc repro evaluate` first"):
        run(folder, tmp_path / "summary.json")
    (folder / "eval.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        run(folder, tmp_path / "summary.json")
    (folder / "eval.json").write_text('{"ship_output": "coarse"}')
    with pytest.raises(UserError, match="missing or malformed scores"):
        run(folder, tmp_path / "summary.json")
    result = subprocess.run([sys.executable, "-m", "headtex", "summary", "--metrics", str(folder),
                             "--out", str(tmp_path / "s.json")], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.json").exists()
