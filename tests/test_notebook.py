"""train_tiny_gpu.ipynb: kept without outputs in git, and executed top to bottom with nbclient, offline, on the
CPU, with tiny values in its parameters cell: it clones this repository (the local path as REPO_URL), picks
the bundled sample because the hub does not answer, trains, plots, evaluates and zips, as in Colab."""
import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "train_tiny_gpu.ipynb"


def parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1 and cells[0] is next(c for c in nb.cells if c.cell_type == "code")
    return cells[0]


def test_notebook_is_kept_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    source = parameters_cell(nb).source
    for name in ("REPO_URL", "N_PAIRS = 10_000", "MAX_ITERS = 5000", "DATA_SOURCE = 'auto'", "DEVICE", "DTYPE",
                 "COMPILE"):
        assert name in source


def test_notebook_runs_offline_on_cpu(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    clone, out_dir = tmp_path / "clone", tmp_path / "clone" / "out" / "colab_backpack"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    if not head:  # not a git checkout (a source archive): the notebook takes the checkout put in REPO_DIR
        shutil.copytree(REPO, clone, ignore=lambda d, names: [
            n for n in names if n in (".venv", ".git", "out", "__pycache__", ".pytest_cache")
            or (Path(d) == REPO / "data" and n not in ("europarl", "eval", "tokenizers"))])
    cell = parameters_cell(nb)
    # the notebook's own parameters run first; the test's tiny ones are appended
    cell.source += f"""
REPO_URL = {str(REPO)!r}
REPO_DIR = {str(clone)!r}
INSTALL = False
N_PAIRS = 1000
VOCAB_SIZE = 1024
DATA_DIR = os.path.join(REPO_DIR, 'data', 'europarl')
CONFIG = 'train_europarl_tiny'
MAX_ITERS = 20
EVAL_INTERVAL = 10
EVAL_ITERS = 2
OVERRIDES = {{'block_size': 64, 'n_layer': 1, 'n_head': 2, 'n_embd': 32, 'n_senses': 4, 'batch_size': 8}}
OUT_DIR = {str(out_dir)!r}
TRANSLATION_SAMPLES = 4
SENTENCE_PAIRS = 20
RESULTS_ZIP = {str(tmp_path / 'results.zip')!r}
"""
    # a kernel of this interpreter whatever kernels the machine has; the hub is said to be off
    kernels = tmp_path / "jupyter" / "kernels" / "backpack-test"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "backpack test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    NotebookClient(nb, kernel_name="backpack-test", timeout=600,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    if head:
        assert f"$ git clone --depth 1 {REPO} {clone}" in text
        assert subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=clone).stdout.strip() == head  # the clone is this repository's HEAD
    else:
        assert f"using the repository in {clone}" in text
    assert "data source: sample (the hub does not answer" in text
    assert "sample data: 1,000 train / 1,000 valid / 1,000 test pairs; tokenizer bpe, vocabulary 1,024" in text
    assert "  --device cpu\n  --dtype float32\n  --compile False" in text

    png = out_dir / "loss_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)

    log = json.loads((out_dir / "training_log.json").read_text())
    assert [e["iter"] for e in log["evals"]] == [0, 10, 20] and log["model_type"] == "backpack"
    results = json.loads((out_dir / "evaluation_results.json").read_text())
    assert results["model"]["model_type"] == "backpack" and results["model"]["iter_num"] == 20
    for split in ("val_en", "val_fr", "test_en", "test_fr"):
        ppl = results["perplexity"][split]["ppl"]
        assert math.isfinite(ppl) and 1 < ppl < 1024  # below uniform over the vocabulary after training
    assert set(results["translation"]) == {"en-fr", "fr-en"}
    assert all(r["n"] == 4 for r in results["translation"].values())

    with zipfile.ZipFile(tmp_path / "results.zip") as zf:
        names = set(zf.namelist())
    assert {"colab_backpack/evaluation_results.json", "colab_backpack/evaluation_report.md",
            "colab_backpack/loss_curves.png", "colab_backpack/training_log.json"} <= names
    assert not [n for n in names if n.endswith(".pt")]
