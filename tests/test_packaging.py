"""The built wheel works outside the checkout: installed into a fresh virtual environment (its
dependencies visible through this environment's site-packages), imported from a folder outside
the repository, a vanilla LSTM scanned over a short sequence equals a NumPy LSTM with the same
weights, and the data CLI answers. Also: every package that ``lstm_research`` imports is a
declared dependency of the wheel.
"""
from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.packaging

SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    import jax, jax.numpy as jnp
    import lstm_research
    from lstm_research import cells
    from lstm_research.layers.scan import scan

    print("file", lstm_research.__file__)
    try:
        import configs  # the repository's configs/ must not be needed (nor reachable)
        print("configs importable", configs.__file__)
    except ImportError:
        pass
    cell = cells.get("vanilla", 8)
    params = cell.init(jax.random.key(0), 3)
    xs = np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32)  # [T, B, I]
    _, ys = jax.jit(lambda p, x: scan(cell, p, x, cell.initial_carry((2,))))(params, xs)

    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    sig = lambda a: 1 / (1 + np.exp(-a))
    h, c, ref = np.zeros((2, 8)), np.zeros((2, 8)), []
    for x in xs:  # Greff et al. 2015, gate order (i, f, z, o), peepholes
        a_i, a_f, a_z, a_o = np.split(x @ p["w_x"] + h @ p["w_h"] + p["b"], 4, axis=-1)
        i, f = sig(a_i + p["peephole_i"] * c), sig(a_f + p["peephole_f"] * c)
        c = np.tanh(a_z) * i + c * f
        h = np.tanh(c) * sig(a_o + p["peephole_o"] * c)
        ref.append(h)
    print("max_abs_diff", float(np.max(np.abs(np.asarray(ys) - np.stack(ref)))))
''')


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of what the package needs (pyproject, README, the package),
    so the build neither writes into the checkout nor sees the rest of it."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(ROOT / "lstm_research", src / "lstm_research",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, cwd=tmp_path, capture_output=True, text=True)
    (wheel,) = (tmp_path / "dist").glob("lstm_research-*.whl")
    return wheel


def test_wheel_in_a_fresh_environment(wheel, tmp_path):
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    env_site = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies: this environment's site-packages, after the fresh one's own
    here = sysconfig.get_paths()["purelib"]
    (env_site / "zz_dependencies.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "JAX_PLATFORMS": "cpu", "COLUMNS": "1000"}  # COLUMNS: help lines unwrapped
    run = subprocess.run([python, "-c", SCRIPT], cwd=outside, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    assert Path(lines["file"]).is_relative_to(env_site), lines  # the wheel, not the checkout
    assert "configs" not in lines, lines
    assert float(lines["max_abs_diff"]) < 1e-5, lines

    cli = subprocess.run([python, "-m", "lstm_research.data", "download", "--help"], cwd=outside,
                         env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and "--mirror" in cli.stdout, cli.stderr
    # the default data dir is the user cache, not a folder next to the installed package
    default = tmp_path / "home" / ".cache" / "lstm_research" / "data"
    assert f"now {default})" in cli.stdout, cli.stdout


def _imported_top_level(package: Path) -> set[str]:
    names = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"lstm_research", "__future__"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared(wheel):
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        text = z.read(meta).decode()
    declared = {_norm(re.match(r"[A-Za-z0-9_.-]+", line.split(":", 1)[1].strip()).group())
                for line in text.splitlines() if line.startswith("Requires-Dist:")}
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(_imported_top_level(ROOT / "lstm_research")):
        dists = {_norm(d) for d in providers.get(module, [])}
        assert dists, f"{module} is imported but no installed distribution provides it"
        if not dists & declared:
            missing[module] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
