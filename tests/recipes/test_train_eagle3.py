"""scripts/train_eagle3.py, run as users run it: the default command reproduces a head as good as the shipped one, and
a run is deterministic from its seed.

The shipped head (glm_plugin/assets/tiny-glm-eagle3) was written by the default command; on one machine a rerun is
byte-identical. Across CPUs float kernels differ and 150 optimiser steps amplify that, so here the fresh head is
judged by what it is for: its held-out acceptance, and vLLM's layout. The time budget (20 minutes on 2 cores) is
reported, not asserted (a loaded CI machine is not a measurement); the script's docstring holds the measurement.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_eagle3.py"
SHIPPED = ROOT / "glm_plugin" / "assets" / "tiny-glm-eagle3"
SMALL = ["--train-convs", "12", "--eval-convs", "4", "--max-new", "24", "--train-steps", "4", "--batch", "4"]


def train(out: pathlib.Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "UNEXPECTED" not in proc.stdout + proc.stderr, "loading the target must not print transformers' key table"
    return json.loads((out / "training_meta.json").read_text())


def test_same_seed_gives_the_same_head_byte_for_byte(tmp_path):
    train(tmp_path / "a", *SMALL)
    train(tmp_path / "b", *SMALL)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = train(tmp_path / "c", *SMALL, "--seed", "1")
    assert (tmp_path / "c" / "model.safetensors").read_bytes() != (tmp_path / "a" / "model.safetensors").read_bytes()
    assert other["seed"] == 1


def test_default_command_trains_a_head_like_the_shipped_one(tmp_path):
    meta = train(tmp_path)
    shipped = json.loads((SHIPPED / "training_meta.json").read_text())
    print(f"train_eagle3.py defaults: {meta['minutes']} min, held-out acceptance length "
          f"{1 + meta['held_out_accepted_per_step']:.2f} "
          f"(shipped head: {1 + shipped['held_out_accepted_per_step']:.2f})")
    assert not meta["data_from_cache"]
    # Shipped: 1.40 drafts accepted per verification (acceptance length 2.40); the issue asks > 1.5 in vLLM.
    assert meta["held_out_accepted_per_step"] >= 1.2
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads((SHIPPED / "config.json").read_text())
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as fresh, \
            safe_open(str(SHIPPED / "model.safetensors"), "pt") as ship:
        assert sorted(fresh.keys()) == sorted(ship.keys())
        for key in fresh.keys():
            assert fresh.get_slice(key).get_shape() == ship.get_slice(key).get_shape(), key
            assert fresh.get_slice(key).get_dtype() == ship.get_slice(key).get_dtype(), key
