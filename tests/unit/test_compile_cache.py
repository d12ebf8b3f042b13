"""The compiled-definition cache: an unchanged build skips the SDK entirely, any change recompiles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
from pathlib import Path
from pipelines.config import load_config
from pipelines.pipeline import compile_pipeline
overrides = json.loads(sys.argv[2])
compiled = compile_pipeline(load_config(overrides=overrides, environ={}), cache_dir=Path(sys.argv[1]))
print(json.dumps({"sdk_imported": "sagemaker" in sys.modules, "definition": compiled.definition,
                  "uploads": sorted(compiled.uploads)}))
"""


def compile_in_fresh_process(cache: Path, *overrides: str) -> dict:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(cache), json.dumps(list(overrides))],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cache_hit_skips_the_sdk_and_returns_the_same_definition(tmp_path: Path) -> None:
    first = compile_in_fresh_process(tmp_path)
    assert first["sdk_imported"] is True
    assert len(list(tmp_path.glob("*.json"))) == 1
    second = compile_in_fresh_process(tmp_path)
    assert second["sdk_imported"] is False
    assert second["definition"] == first["definition"] and second["uploads"] == first["uploads"]


def test_a_changed_setting_or_a_corrupt_entry_recompiles(tmp_path: Path) -> None:
    compile_in_fresh_process(tmp_path)
    changed = compile_in_fresh_process(tmp_path, "evaluation.threshold=0.77")
    assert changed["sdk_imported"] is True
    assert '"DefaultValue": 0.77' in changed["definition"]
    assert len(list(tmp_path.glob("*.json"))) == 2
    for entry in tmp_path.glob("*.json"):
        entry.write_text("{not json")
    again = compile_in_fresh_process(tmp_path)
    assert again["sdk_imported"] is True and json.loads(again["definition"])["Steps"]
