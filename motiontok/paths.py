"""Where the shipped assets (H1 model, tokenizer checkpoint) live: the one place that knows.

The repository keeps them in the top-level ``assets/`` folder. A wheel carries that folder as the data-only
package ``motiontok.assets`` (``[tool.setuptools.package-dir]`` in pyproject.toml), so an installed
``motiontok`` finds them next to its own modules; a source checkout or an editable install finds them beside
the package folder.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def asset_dir() -> Path:
    """Root of the shipped assets: ``<motiontok>/assets`` in an installed wheel, else the checkout's ``assets``."""
    installed = _PACKAGE_DIR / "assets"
    return installed if installed.is_dir() else _PACKAGE_DIR.parent / "assets"
