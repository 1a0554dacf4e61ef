"""What an installed glm_plugin wheel must carry, checked from outside the source tree (scripts/ci_wheel_check.sh).

Usage: python check_installed_wheel.py VENV SUMS
  VENV: the environment the wheel was installed into; SUMS: `sha256sum` lines of the tree's csrc/ and
  glm_plugin/assets files (paths relative to the package). Exits 1 naming every problem found.

Why: every other test imports the editable checkout, where csrc/ is reached through a symlink, the assets are the
tree's own files and the entry points are whatever `pip install -e` wrote. Here the package that loads must be the
wheel's copy in VENV, with every kernel source and asset as a real file (not a link back into a tree), and both
engines' entry points and the console script pointing at it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import sysconfig
from importlib.metadata import distribution, entry_points
from pathlib import Path

ENTRY_POINTS = {"vllm.general_plugins": "glm_plugin.engines.vllm:register",
                "sglang.srt.plugins": "glm_plugin.engines.sglang:register"}


def problems(venv: Path, sums: Path) -> list[str]:
    import glm_plugin

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    package = Path(glm_plugin.__file__).resolve().parent
    found = []
    if package.parent != site or not str(site).startswith(str(venv.resolve())):
        return [f"glm_plugin was imported from {package}, not from the wheel installed in {site}"]
    dist = distribution("glm-plugin")
    if Path(str(dist.locate_file(""))).resolve() != site:
        found.append(f"the first glm-plugin distribution on the path is at {dist.locate_file('')}, not {site}")
    if '"editable": true' in (dist.read_text("direct_url.json") or ""):
        found.append("glm-plugin is installed editable")
    for line in sums.read_text().splitlines():
        digest, relative = line.split(maxsplit=1)
        path = package / relative
        if path.is_symlink() or not path.is_file():
            found.append(f"{relative}: {'a link' if path.is_symlink() else 'missing'} in the installed package")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            found.append(f"{relative}: differs from the source tree's")
    for group, value in ENTRY_POINTS.items():
        points = [ep for ep in entry_points(group=group) if ep.name == "glm_plugin"]
        if [ep.value for ep in points] != [value]:
            found.append(f"entry point {group}: {[ep.value for ep in points]}, expected [{value!r}]")
            continue
        loaded = points[0].load()
        if not Path(sys.modules[loaded.__module__].__file__).resolve().is_relative_to(package):
            found.append(f"entry point {group} loads {loaded.__module__} from outside the installed package")
    script = venv / "bin" / "glm-plugin"
    run = subprocess.run([str(script), "--help"], capture_output=True, text=True) if script.exists() else None
    if run is None or run.returncode != 0 or "serve" not in run.stdout:
        found.append(f"console script {script}: {'missing' if run is None else run.stderr[-500:] or run.stdout[-500:]}")
    return found


def main() -> int:
    venv, sums = Path(sys.argv[1]), Path(sys.argv[2])
    found = problems(venv, sums)
    for problem in found:
        print(f"glm-plugin wheel check: {problem}", file=sys.stderr)
    if not found:
        print(f"glm-plugin wheel check: the installed package carries {len(sums.read_text().splitlines())} kernel "
              f"source and asset files, both engines' entry points and the console script")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
