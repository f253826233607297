"""Where `headtex reconstruct` (and every command that applies the trained model to photos) finds its
params, head template and model when run outside the repository.

Each comes from, in order: the option given (`--params/--template/--model`); the current folder as a
checkout lays it out (`params.yaml`, `models/template`, `models/inpainter.pt`: DVC runs stages there);
the checkout the package was installed from (`pip install -e`); the cache folder (`$HEADTEX_CACHE`, else
`$XDG_CACHE_HOME/headtex`, else `~/.cache/headtex`: `template/` and `inpainter.pt`). params.yaml also ships
inside the package (a link to the repository's own file, so the two cannot differ). A missing asset is one
line saying how to get it.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from headtex.io import UserError

PARAMS = Path("params.yaml")
TEMPLATE = Path("models/template")
MODEL = Path("models/inpainter.pt")


def cache_dir() -> Path:
    """The folder for assets used outside a checkout."""
    if os.environ.get("HEADTEX_CACHE"):
        return Path(os.environ["HEADTEX_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "headtex"


def installed_checkout() -> Path | None:
    """The repository an editable install runs from (src/headtex/ -> the folder holding dvc.yaml), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "dvc.yaml").is_file() and (root / "src" / "headtex").is_dir() else None


def packaged_params() -> Path | None:
    path = Path(str(resources.files("headtex") / "params.yaml"))
    return path if path.is_file() else None


def _candidates(relative: Path) -> list[Path]:
    places = [relative]
    checkout = installed_checkout()
    if checkout is not None:
        places.append(checkout / relative)
    return places


def find_params(given: Path | None) -> Path:
    if given is not None:
        return Path(given)
    for path in [PARAMS, packaged_params()]:
        if path is not None and path.is_file():
            return path
    raise UserError("params.yaml: not in this folder and not shipped with the installed package; "
                    "pass --params PATH (the repository's params.yaml)")


def find_template(given: Path | None) -> Path:
    if given is not None:
        return Path(given)
    cached = cache_dir() / "template"
    for path in _candidates(TEMPLATE) + [cached]:
        if (path / "template.npz").is_file():
            return path
    raise UserError(f"{cached}: no head template here, in this folder's models/template or in the installed "
                    f"checkout; build it once with `headtex template --out {cached}` (downloads menpo3d's scan "
                    "with pip), or pass --template DIR")


def find_model(given: Path | None) -> Path:
    if given is not None:
        return Path(given)
    cached = cache_dir() / "inpainter.pt"
    for path in _candidates(MODEL) + [cached]:
        if path.is_file():
            return path
    raise UserError(f"{cached}: no inpainting model here, in this folder's models/ or in the installed checkout; "
                    "in a checkout run `make repro` (or `dvc repro train`; `dvc pull` if a remote holds one), "
                    f"then copy models/inpainter.pt to {cached}, or pass --model PATH")
