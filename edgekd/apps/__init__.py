"""The sample apps' side of edgekd: where the apps live, serving the web app, copying exports into an app.

The apps (apps/web, apps/android, apps/ios) are source trees, not Python package data: the web app needs its npm
packages (node_modules, ~180 MB, installed by scripts/setup.sh) and the mobile apps are opened in Android Studio or
Xcode. So edgekd finds them beside the package (a checkout, installed with ``pip install -e .``) or where
``EDGEKD_APPS`` / ``--apps-dir`` points.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgekd.errors import EdgekdError

APPS_ENV = "EDGEKD_APPS"


def apps_root(explicit: str | Path | None = None) -> Path:
    """The folder holding web/, android/, ios/: ``explicit``, else $EDGEKD_APPS, else apps/ beside the package."""
    if explicit is not None:
        root, how = Path(explicit), "--apps-dir"
    elif os.environ.get(APPS_ENV):
        root, how = Path(os.environ[APPS_ENV]), f"${APPS_ENV}"
    else:
        root, how = Path(__file__).resolve().parents[2] / "apps", "the checkout edgekd runs from"
    if not root.is_dir():
        raise EdgekdError(f"no apps folder at {root} ({how}); the sample apps ship with the edgekd source checkout: "
                          f"install it with `pip install -e .` or point --apps-dir / ${APPS_ENV} at its apps/ folder")
    return root


def app_dir(app: str, explicit: str | Path | None = None) -> Path:
    """One app's folder (apps/web, apps/android, apps/ios); a missing one is one clear error."""
    path = apps_root(explicit) / app
    if not path.is_dir():
        raise EdgekdError(f"the {app} app is not at {path}; use an edgekd checkout that has apps/{app} "
                          f"(or point --apps-dir / ${APPS_ENV} at one)")
    return path
