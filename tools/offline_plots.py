"""Build a self-contained HTML page template for `dvc plots show`: vega, vega-lite and vega-embed inlined,
so the page draws its charts without internet (DVC's default page loads them from a CDN).

    python tools/offline_plots.py DIR_WITH_NPM_TARBALLS OUT.html

The tarballs are what `npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2` writes (the versions
DVC's own page asks the CDN for). The template has DVC's `{plot_divs}` and `{refresh_tag}` placeholders
and no `{scripts}` one, so DVC's CDN script tags are left out. `make plots` builds it and points
`plots.html_template` (in .dvc/config.local) at it.
"""
from __future__ import annotations

import sys
import tarfile
from pathlib import Path

LIBRARIES = ("vega", "vega-lite", "vega-embed")  # in loading order

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>headtex: DVC plots</title>
    <!-- vega, vega-lite and vega-embed inlined by tools/offline_plots.py: no network needed -->
SCRIPTS
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
        img { image-rendering: pixelated; max-width: 100%; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def library_source(folder: Path, name: str) -> str:
    """build/<name>.min.js from the npm tarball <name>-<version>.tgz in folder."""
    tarballs = sorted(folder.glob(f"{name}-[0-9]*.tgz"))
    if not tarballs:
        raise SystemExit(f"{folder}: no {name}-<version>.tgz; run `npm pack {name}@<version>` there")
    with tarfile.open(tarballs[-1]) as archive:
        member = archive.extractfile(f"package/build/{name}.min.js")
        if member is None:
            raise SystemExit(f"{tarballs[-1]}: has no package/build/{name}.min.js")
        source = member.read().decode("utf-8")
    for placeholder in ("{plot_divs}", "{refresh_tag}", "{scripts}"):
        if placeholder in source:  # DVC replaces these anywhere in the page
            raise SystemExit(f"{tarballs[-1]}: contains DVC's placeholder {placeholder}")
    return source.replace("</script", "<\\/script")


def build(folder: Path, out: Path) -> None:
    scripts = "\n".join(f"    <script>/* {name} */\n{library_source(folder, name)}\n    </script>" for name in LIBRARIES)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(PAGE.replace("SCRIPTS", scripts), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    build(Path(sys.argv[1]), Path(sys.argv[2]))
