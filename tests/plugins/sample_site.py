"""Install the sample plugin distribution into a directory as `pip install` would (package + .dist-info)."""

from __future__ import annotations

import shutil
from pathlib import Path

from patterd.plugins import ENTRY_POINT_GROUP

SAMPLE = Path(__file__).parent / "sample_plugin"
# The sample distribution's entry points (as in sample_plugin/pyproject.toml).
ENTRY_POINTS = {"llm.echo": "patterd_sample:SPEC", "carrier.sample": "patterd_sample.carrier:SPEC"}


def install_sample(site: Path) -> Path:
    """Copy patterd_sample and its metadata into `site` (put `site` on sys.path or PYTHONPATH to use it)."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        SAMPLE / "patterd_sample", site / "patterd_sample", ignore=shutil.ignore_patterns("__pycache__")
    )
    info = site / "patterd_sample_plugin-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: patterd-sample-plugin\nVersion: 0.0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in ENTRY_POINTS.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    return site
