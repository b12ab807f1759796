"""The page that `dvc plots show` and `dvc plots diff` fill, with vega, vega-lite and vega-embed inlined.

DVC's default page loads the three libraries from a CDN (dvc_render.vega.VegaRenderer.SCRIPTS), so
without a network every chart is an empty div and nothing says why. DVC lets a project supply its own
page (`plots.html_template` in .dvc/config, read relative to .dvc/); this module writes that page with
the libraries inside it, taken from vl-convert-python's bundle, so a user needs neither Node nor a
network. The page holds about 0.9 MB of third-party code, so it is generated at setup (`make setup`,
`make run`, `make test`) and git-ignored, never committed:

    python -m onecycle.plots_template           # writes the file .dvc/config names (plots.html_template)

Versions: DVC's page loads vega@5.20.2, vega-lite@5.2.0 and vega-embed@6.18.2, and its templates (and
ours in .dvc/plots/) declare the vega-lite v5 schema. vl-convert-python 1.7.0 is the last release
whose bundle has those majors (vega 5.30.0, vega-lite 5.21, vega-embed 6.26.0); 1.8 moved to vega 6
and vega-embed 7. `build_page` checks the majors, so a bump of the pin that changes them fails here.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from onecycle import io

log = logging.getLogger(__name__)

VEGA_LITE = "5.21"  # the newest vega-lite 5 in vl-convert-python 1.7.0's bundle: DVC's specs are v5
MAJORS = {"vega": "5", "vega-lite": "5", "vega-embed": "6"}  # what DVC's own page loads from the CDN
# DVC fills the page by plain string replacement of these (dvc_render.html.HTML.embed). The page has
# no {scripts}: that is where DVC would put its CDN <script> tags.
PLOTS_PLACEHOLDER = "{plot_divs}"
REFRESH_PLACEHOLDER = "{refresh_tag}"
DVC_PLACEHOLDERS = ("{scripts}", PLOTS_PLACEHOLDER, REFRESH_PLACEHOLDER)

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- {versions}: from vl-convert-python {vl_convert}, written by `python -m onecycle.plots_template` -->
    <script>
{bundle}
    </script>
    <style>
        table {{ border-spacing: 15px; }}
        /* DVC puts each image at its natural size; never wider than the window */
        img {{ max-width: calc(100vw - 60px); height: auto; }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def library_versions() -> dict[str, str]:
    """{library: version} of the bundle vl-convert-python gives, checked against MAJORS.

    Raises RuntimeError naming the library when a major differs from what DVC's specs are written for."""
    import vl_convert

    versions = {"vega": vl_convert.get_vega_version(), "vega-lite": VEGA_LITE,
                "vega-embed": vl_convert.get_vega_embed_version()}
    if VEGA_LITE not in vl_convert.get_vegalite_versions():
        raise RuntimeError(f"vl-convert-python {vl_convert.__version__} has no vega-lite {VEGA_LITE} "
                           f"(it has {', '.join(vl_convert.get_vegalite_versions())}): pin the version pyproject.toml names")
    for name, major in MAJORS.items():
        if versions[name].split(".")[0] != major:
            raise RuntimeError(f"vl-convert-python {vl_convert.__version__} bundles {name} {versions[name]}, but "
                               f"DVC's page and templates need {name} {major}: pin the version pyproject.toml names")
    return versions


def build_page() -> str:
    """The HTML page, DVC's {refresh_tag} and {plot_divs} in place and the three libraries inlined.

    The bundle is one classic script that sets window.vega, window.vegaLite and window.vegaEmbed, so it
    runs before the inline `vegaEmbed(...)` calls in the divs DVC writes into the body."""
    import vl_convert

    versions = library_versions()
    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
    # "</script" would end the element early; "<\/" is the same text inside a JS string or regex.
    bundle = bundle.replace("</script", "<\\/script")
    for text in (*DVC_PLACEHOLDERS, "<!--"):  # DVC would replace these; "<!--" changes how HTML parses a script
        if text in bundle:
            raise RuntimeError(f"vl-convert-python's bundle contains {text!r}: it cannot be inlined in DVC's page as is")
    names = ", ".join(f"{name} {version}" for name, version in versions.items())
    return PAGE.format(versions=names, vl_convert=vl_convert.__version__, bundle=bundle,
                       refresh_tag=REFRESH_PLACEHOLDER, plot_divs=PLOTS_PLACEHOLDER)


def configured_path(repo: Path) -> Path:
    """Where DVC reads the page in `repo`: plots.html_template of its config, relative to .dvc/ as DVC takes it
    (dvc.commands.plots.CmdPlots._html_template_path)."""
    from dvc.config import Config

    dvc_dir = repo / ".dvc"
    name = Config(dvc_dir=str(dvc_dir)).get("plots", {}).get("html_template")
    if not name:
        raise RuntimeError(f"{dvc_dir / 'config'} sets no plots.html_template: nothing tells DVC to use the page")
    return dvc_dir / name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: here)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = configured_path(args.repo)
    io.write_text(path, build_page())
    log.info("wrote %s, the offline page for `dvc plots show` and `dvc plots diff`", path)


if __name__ == "__main__":
    main()
