"""Install into SITE the wheels of WHEEL_DIR whose distribution this interpreter cannot find, and no other.

    python3 benchmarks/serve/install_missing.py SITE WHEEL_DIR

On an offline GPU node the machine's own packages (torch and the rest) must win: a wheel is installed only where
``importlib.metadata`` finds no distribution of its name on the current path (SITE included, when it is on
PYTHONPATH). Names are compared, not versions: a distribution present in another version than the resolved one
is kept, as the node's own stack must be. Prints what was present and what it installs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path


def distribution(wheel: Path) -> str:
    """The normalised distribution name of a wheel file (PEP 503)."""
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def main(site: str, wheel_dir: str) -> None:
    present, missing = [], []
    for wheel in sorted(Path(wheel_dir).glob("*.whl")):
        try:
            present.append(f"{distribution(wheel)}=={metadata.version(distribution(wheel))}")
        except metadata.PackageNotFoundError:
            missing.append(wheel)
    print(f"present {len(present)}: {' '.join(present)}")
    print(f"installing {len(missing)}: {' '.join(distribution(w) for w in missing)}")
    if missing:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", site]
        subprocess.run([*command, *map(str, missing)], check=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
