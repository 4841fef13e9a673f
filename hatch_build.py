"""Hatchling build hook: compile railcar's optional C extensions with the interpreter's own compiler.

Each extension is optional (a pure-Python twin, or for ``_uring`` an engine that then says
what is missing), so a failed compile (no compiler, no Python headers, no liburing) only
logs a warning and the package installs without it.  An editable install builds them
in place under src/ (where the editable path points); a wheel carries them as platform files.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: (dotted module name, C sources relative to the repository root, libraries to link).
EXTENSIONS: list[tuple[str, list[str], list[str]]] = [
    ("railcar.proto._resp", ["src/railcar/proto/_resp.c"], []),
    (
        "railcar.proto._http1",
        ["src/railcar/proto/_http1.c", *(f"src/railcar/proto/llhttp/{name}.c" for name in ("api", "http", "llhttp"))],
        [],
    ),
    ("railcar.kv._exec", ["src/railcar/kv/_exec.c"], []),
    ("railcar.engine._uring", ["src/railcar/engine/_uring.c"], ["uring"]),
]


def _command(sources: list[Path], libraries: list[str], target: Path) -> list[str]:
    """One compile-and-link command, with the flags Python itself was built with."""
    config = sysconfig.get_config_var
    shared = shlex.split(config("LDSHARED") or "cc -shared")
    flags = shlex.split(config("CFLAGS") or "") + shlex.split(config("CCSHARED") or "-fPIC")
    include = f"-I{sysconfig.get_paths()['include']}"
    return [
        *shared,
        *flags,
        include,
        *map(str, sources),
        "-o",
        str(target),
        *(f"-l{lib}" for lib in libraries),
    ]


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compiles ``EXTENSIONS`` for the wheel and editable builds."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Compile each extension; a failure is a warning and leaves the pure-Python path."""
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        editable = version == "editable"
        out_dir = Path(tempfile.mkdtemp(prefix="railcar-ext-"))
        for module, sources, libraries in EXTENSIONS:
            relative = Path(*module.split(".")).with_suffix("")
            name = relative.name + suffix
            in_place = root / "src" / relative.parent / name
            # Editable: built beside its place (a rename does not cross file systems).
            built = in_place.with_name(name + ".building") if editable else out_dir / name
            argv = _command([root / source for source in sources], libraries, built)
            try:
                done = subprocess.run(
                    argv, capture_output=True, text=True, errors="replace", check=False, timeout=300
                )
            except Exception as exc:  # noqa: BLE001 - whatever goes wrong, the install goes on without it
                self._skip(module, str(exc), [built, in_place] if editable else [built])
                continue
            if done.returncode:
                detail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
                self._skip(module, detail, [built, in_place] if editable else [built])
                continue
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
            if editable:
                # A new file, renamed over the old: a process that has the old one loaded keeps
                # its copy (writing into it in place would crash that process).
                os.replace(built, in_place)
            else:
                build_data["force_include"][str(built)] = str(relative.parent / name)

    def _skip(self, module: str, why: str, leftovers: list[Path]) -> None:
        """Warn that ``module`` was not built and remove ``leftovers``.

        In an editable install those include an older build, which would be imported as if current.
        """
        for path in leftovers:
            path.unlink(missing_ok=True)
        self.app.display_warning(f"railcar: {module} not built; using the pure-Python path:\n{why}")
