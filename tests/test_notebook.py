"""The Colab notebook runs top to bottom (tiny config), and the launch scripts parse."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "ipcgan_colab.ipynb")
LAUNCH_SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "launch", "*.sh")) +
                        glob.glob(os.path.join(ROOT, "launch", "*.sbatch")))
KERNEL_NAME = "ipcgan-test-python"
CELL_TIMEOUT_S = 600


def _install_kernel_spec(jupyter_dir: str) -> None:
    """A kernel spec running this interpreter, found first through JUPYTER_PATH: the test
    never depends on which (if any) 'python3' kernel the machine has registered."""
    spec_dir = os.path.join(jupyter_dir, "kernels", KERNEL_NAME)
    os.makedirs(spec_dir)
    with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
        json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                   "display_name": "ipcgan test", "language": "python"}, f)


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    jupyter_dir = str(tmp_path / "jupyter")
    _install_kernel_spec(jupyter_dir)
    workdir = tmp_path / "workdir"
    # The kernel inherits this environment: the tiny variant, a throwaway workdir, one
    # CPU device (conftest's 8 simulated devices would only slow the kernel down) and
    # the tests' compilation cache.
    monkeypatch.setenv("JUPYTER_PATH", jupyter_dir + os.pathsep + os.environ.get("JUPYTER_PATH", ""))
    monkeypatch.setenv("IPCGAN_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("IPCGAN_NOTEBOOK_WORKDIR", str(workdir))
    monkeypatch.setenv("IPCGAN_REPO", ROOT)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR",
                       os.environ.get("IPCGAN_TEST_JAX_CACHE", "/tmp/ipcgan_jax_test_jax_cache"))

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}})
    client.execute()  # raises CellExecutionError naming the failing cell

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # Sample sheets, the aged face, the evaluation's samples.
    assert len(images) >= 3, f"expected the notebook to show at least 3 images, it showed {len(images)}"
    assert sorted(p.name for p in (workdir / "samples").glob("*.png")), "no sample grids written"
    assert list((workdir / "eval").glob("step_*/results.json")), "the evaluation wrote no results"


def test_notebook_install_cell_runs_only_on_colab():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    shell_lines = [line for cell in notebook.cells if cell.cell_type == "code"
                   for line in cell.source.splitlines() if line.lstrip().startswith("!")]
    assert shell_lines, "the install cell is gone"
    assert all(line.startswith("    ") for line in shell_lines), (
        "every shell command must sit inside the `if IN_COLAB:` block: " + "; ".join(shell_lines))


@pytest.mark.parametrize("script", LAUNCH_SCRIPTS, ids=os.path.basename)
def test_launch_script_is_valid_bash(script):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    result = subprocess.run([bash, "-n", script], capture_output=True, text=True)
    assert result.returncode == 0, f"{script}: {result.stderr}"
    with open(script) as f:
        assert f.readline().startswith("#!"), f"{script} has no shebang line"
    assert os.access(script, os.X_OK), f"{script} is not executable"


def test_every_launch_script_is_in_the_launch_readme():
    assert len(LAUNCH_SCRIPTS) >= 4
    with open(os.path.join(ROOT, "launch", "README.md")) as f:
        readme = f.read()
    missing = [os.path.basename(s) for s in LAUNCH_SCRIPTS if os.path.basename(s) not in readme]
    assert not missing, f"launch/README.md does not describe {missing}"
