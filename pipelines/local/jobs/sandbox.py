"""Per-job sandbox standing in for a container's `/opt/ml`: path mapping, shims, command and environment."""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipelines.local.errors import UnsupportedError

OPT_ML = "/opt/ml"
# `/opt/ml` as a path prefix inside any text (arguments, shell scripts), not as part of a longer name.
_OPT_ML_RE = re.compile(r"(?<![\w./-])/opt/ml(?![\w.-])")
_PYTHON_NAMES = re.compile(r"^python(3(\.\d+)?)?$")
# Shell lines that would install packages; the local engine never does (no network, no venv changes).
_INSTALL_LINE = re.compile(
    r"install_requirements\.py|(^|[\s;&|])(\S*/)?pip3?\s+(install|uninstall)\b|-m\s+pip\s+(install|uninstall)\b"
)
_SKIP_ECHO = 'echo "[local-engine] skipped locally: the local engine never pip-installs requirements"'
_SHIM_SOURCE = Path(__file__).with_name("optml_shim") / "sitecustomize.py"
PROJECT_ROOT = Path(__file__).resolve().parents[3]


class Sandbox:
    """Maps a job's `/opt/ml` onto `<job_dir>/opt_ml` and builds the command and environment to run it.

    SageMaker's toolkits honour `SAGEMAKER_BASE_DIR` in place of `/opt/ml`; for scripts that hard-code
    `/opt/ml`, arguments and shell scripts are rewritten and a `sitecustomize` shim remaps Python's
    file functions.
    """

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = Path(job_dir).resolve()
        self.base = self.job_dir / "opt_ml"
        self.shim_dir = self.job_dir / "_pyshim"
        self.bin_dir = self.job_dir / "_bin"
        self._rewritten: set[Path] = set()

    def prepare(self, folders: Iterable[str] = ()) -> None:
        """Create the base, the given container folders, the Python shim and the PATH wrappers."""
        self.base.mkdir(parents=True, exist_ok=True)
        for folder in folders:
            self.local(folder).mkdir(parents=True, exist_ok=True)
        self.shim_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_SHIM_SOURCE, self.shim_dir / "sitecustomize.py")
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        # `python`/`python3` in scripts must be this interpreter (its venv has the job's packages).
        for name in ("python", "python3"):
            _write_exec(self.bin_dir / name, f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        for name in ("pip", "pip3"):
            _write_exec(
                self.bin_dir / name,
                '#!/bin/sh\necho "[local-engine] skipped locally: pip $*" >&2\nexit 0\n',
            )

    # --- paths ------------------------------------------------------------------------------------
    def local(self, container_path: str) -> Path:
        """Sandbox path of a container path under `/opt/ml`.

        Raises:
            UnsupportedError: the path is not under `/opt/ml` or climbs out of it with `..`.
        """
        norm = posixpath.normpath(container_path)
        if norm != OPT_ML and not norm.startswith(OPT_ML + "/"):
            raise UnsupportedError(f"container path {container_path!r} is not under {OPT_ML}/")
        return self.base / norm[len(OPT_ML) :].lstrip("/")

    def rewrite(self, text: str) -> str:
        """Replace every `/opt/ml` path prefix in `text` with the sandbox base."""
        return _OPT_ML_RE.sub(lambda _m: str(self.base), text)

    def rewrite_script(self, path: Path) -> bool:
        """Rewrite a shell script in place: `/opt/ml` -> sandbox, package installs -> a logged skip.

        Returns:
            True if the file was rewritten now (each file is rewritten once).
        """
        path = Path(path).resolve()
        if path in self._rewritten or not path.is_file():
            return False
        self._rewritten.add(path)
        lines = []
        for line in self.rewrite(path.read_text(encoding="utf-8", errors="replace")).splitlines():
            if _INSTALL_LINE.search(line) and not line.lstrip().startswith("#"):
                indent = line[: len(line) - len(line.lstrip())]
                line = indent + _SKIP_ECHO
            lines.append(line)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return True

    # --- command and environment -------------------------------------------------------------------
    def command(self, argv: list[str]) -> list[str]:
        """The local command for a container command: paths rewritten, `python` -> this interpreter.

        Shell scripts named anywhere in the command (e.g. `/bin/bash .../runproc.sh`, or inside a
        `bash -c "..."` string) are rewritten in the sandbox copy first.
        """
        if not argv:
            raise UnsupportedError("empty container command")
        local = [self.rewrite(arg) for arg in argv]
        if _PYTHON_NAMES.match(posixpath.basename(local[0])):
            local[0] = sys.executable
        for arg in local:
            for match in re.finditer(r"[^\s'\";&|]+\.sh\b", arg):
                candidate = Path(match.group(0))
                if candidate.is_absolute() and self.base in candidate.resolve().parents:
                    self.rewrite_script(candidate)
        return local

    def environment(
        self,
        job_env: Mapping[str, str],
        *,
        region: str,
        base_env: Mapping[str, str] | None = None,
        pythonpath: Iterable[Path] = (),
    ) -> dict[str, str]:
        """Environment of the job process: inherited basics + shim + `job_env` (which wins).

        Args:
            job_env: the SM_* / request Environment variables of this job.
            region: exported as AWS_REGION / AWS_DEFAULT_REGION, as inside a SageMaker container.
            base_env: environment to start from; None = this process's (the orchestration may pass
                a snapshot). Variables of an outer job (SM_*, SAGEMAKER_*) are dropped.
            pythonpath: extra import roots (the built-in algorithm emulation needs this project).
        """
        source = dict(os.environ if base_env is None else base_env)
        env = {k: v for k, v in source.items() if not k.startswith(("SM_", "SAGEMAKER_", "PDM_LOCAL_"))}
        paths = [str(self.shim_dir), *(str(p) for p in pythonpath)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(paths),
                "PATH": os.pathsep.join([str(self.bin_dir), env.get("PATH", os.defpath)]),
                "SAGEMAKER_BASE_DIR": str(self.base),
                "PDM_LOCAL_OPT_ML": str(self.base),
                "PYTHONUNBUFFERED": "1",
                "AWS_REGION": region,
                "AWS_DEFAULT_REGION": region,
            }
        )
        env.update({k: self.rewrite(str(v)) for k, v in job_env.items()})
        return env


def _write_exec(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def num_gpus() -> int:
    """GPUs visible to jobs, counted as the training toolkit does (`nvidia-smi --list-gpus`)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "--list-gpus"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))
