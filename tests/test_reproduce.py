"""The one-command reproduction (gigacount_lib.reproduce) and its HTML report (gigacount_lib.report).

Most tests run two tiny notebooks written here with nbformat; the end-to-end test of the real
notebooks with the ``tiny`` preset (what CI runs) is marked ``notebook``.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import nbformat
import pytest

from gigacount_lib.cli import main as cli_main
from gigacount_lib.reproduce import (NOTEBOOK_PARAMETERS, REPRODUCE_PRESETS, NotebookFailed, collect_headline,
                                     list_notebooks, main, notebook_parameters, reproduce, run_notebook,
                                     select_notebooks)
from gigacount_lib.report import build_report

KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}
PNG_1PX = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PARAMETERS = ('data_root = None\nquick = True\ndevice = "auto"\nseed = 0\noutput_dir = "../figures"')


def tiny_notebook(path: Path, title: str, body: list[str]) -> Path:
    """A notebook shaped like the course's: badge, setup, a ``parameters`` cell, then ``body`` code cells."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": KERNEL})
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("[![Open In Colab](https://colab.research.google.com/assets/"
                                              "colab-badge.svg)](https://colab.research.google.com/)"),
                nbformat.v4.new_code_cell("import importlib.util\nimportlib.util.find_spec('json')"),
                params,
                nbformat.v4.new_markdown_cell(f"# {title}\n\nProse first.\n\n## Part one of {title}")]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in body]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


WRITE_OUTPUTS = """\
import json, pathlib
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(2, 2)); ax.plot([0, 1], [0, 1])
fig.savefig(out / "01_line.png"); plt.show()
run = out / "runs" / "05_cpu-quick"; run.mkdir(parents=True, exist_ok=True)
(run / "config.json").write_text(json.dumps({"seed": seed}))
(run / "summary.json").write_text(json.dumps({"status": "completed", "global_step": 12, "train_seconds": 3.5,
    "test": {"mae": 4.0, "rmse": 5.0}, "trivial_mae": 20.0, "mae_ratio_to_trivial": 0.2}))
(out / "headline.json").write_text(json.dumps({"table3_rows": 2}))
print("quick is", quick)
"""
FAILING = 'x = 1\nraise ValueError("deliberate failure in the tiny notebook")'


@pytest.fixture
def notebook_dir(tmp_path):
    folder = tmp_path / "notebooks"
    tiny_notebook(folder / "01_first.ipynb", "First notebook", [WRITE_OUTPUTS])
    tiny_notebook(folder / "02_second.ipynb", "Second notebook", ["y = 2", FAILING, "print('never')"])
    return folder


def test_presets_map_onto_the_notebook_contract(tmp_path):
    assert list(REPRODUCE_PRESETS) == ["cpu", "quick", "tiny", "colab-t4", "paper"]
    for name in REPRODUCE_PRESETS:
        params = notebook_parameters(name, output_dir=tmp_path, seed=3, data_root="/data" if "a" in name else None)
        assert tuple(params) == NOTEBOOK_PARAMETERS and params["seed"] == 3
    assert [REPRODUCE_PRESETS[n].quick for n in ("tiny", "quick", "cpu", "colab-t4", "paper")] == \
        [True, True, False, False, False]
    assert REPRODUCE_PRESETS["cpu"].device == "cpu" and REPRODUCE_PRESETS["paper"].device == "cuda"
    with pytest.raises(ValueError, match="needs a real dataset: pass --data-root"):
        reproduce("paper", reports_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown reproduce preset"):
        reproduce("huge", reports_dir=tmp_path)


def test_only_and_from_select_notebooks():
    notebooks = list_notebooks()
    assert [p.name[:2] for p in notebooks][:5] == ["01", "02", "03", "04", "05"]
    assert [p.name[:2] for p in select_notebooks(notebooks, only=["04"])] == ["04"]
    assert [p.name[:2] for p in select_notebooks(notebooks, start="04")] == [p.name[:2] for p in notebooks[3:]]
    with pytest.raises(ValueError, match="--only 99: no notebook matches"):
        select_notebooks(notebooks, only=["99"])
    with pytest.raises(ValueError, match="--from 99"):
        select_notebooks(notebooks, start="99")


def test_command_line_options(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["reproduce", "--help"])
    assert exc.value.code == 0 and "--preset" in capsys.readouterr().out
    assert main(["--quick", "--preset", "cpu"]) == 2 and "disagree" in capsys.readouterr().err
    assert cli_main(["reproduce", "--preset", "colab-t4"]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_failing_notebook_names_the_cell_and_the_partial_output(tmp_path, notebook_dir):
    reports, figures = tmp_path / "reports", tmp_path / "figures"
    with pytest.raises(NotebookFailed) as info:
        reproduce("tiny", run="r1", reports_dir=reports, figures_dir=figures, notebook_dir=notebook_dir)
    err = info.value
    partial = reports / "r1" / "02_second.ipynb"
    message = str(err)
    # cells: badge 0, setup 1, parameters 2, markdown 3, "y = 2" 4, the failing cell 5
    assert err.cell_index == 5 and "02_second.ipynb failed in cell 5" in message
    assert 'raise ValueError("deliberate failure in the tiny notebook")' in message and "x = 1" in message
    assert "ValueError: deliberate failure in the tiny notebook" in message
    assert f"partial output: {partial.resolve()}" in message and partial.is_file()
    assert "--run r1 --from 02" in message
    executed = nbformat.read(str(partial), as_version=4)
    assert any(o.get("ename") == "ValueError" for c in executed.cells for o in c.get("outputs", []))

    manifest = json.loads((reports / "r1" / "manifest.json").read_text())
    assert [(e["notebook"], e["status"]) for e in manifest["notebooks"]] == [("01_first.ipynb", "ok"),
                                                                              ("02_second.ipynb", "failed")]
    assert manifest["notebooks"][1]["error"]["cell_index"] == 5
    assert manifest["preset"] == "tiny" and manifest["parameters"]["quick"] is True
    assert set(manifest["parameters"]) == set(NOTEBOOK_PARAMETERS)
    assert manifest["git"]["commit"] and "torch" in manifest["versions"] and manifest["machine"]["cpu_count"]
    [run] = manifest["headline"]["runs"]
    assert (run["path"], run["test_mae"], run["mae_ratio_to_trivial"], run["seed"]) == \
        ("runs/05_cpu-quick", 4.0, 0.2, 0)
    assert manifest["headline"]["notebooks"] == {"table3_rows": 2}
    assert (figures / "01_line.png").is_file()  # copied from the run's output folder
    report = (reports / "r1" / "report.html").read_text()
    assert 'href="#nb01"' in report and 'href="#nb02"' in report and "failed" in report

    # Run the failing notebook alone through run_notebook: the same error type, same cell.
    with pytest.raises(NotebookFailed, match="failed in cell 5"):
        run_notebook(notebook_dir / "02_second.ipynb", tmp_path / "alone.ipynb",
                     parameters={"output_dir": str(tmp_path / "o")}, timeout_s=120)

    # Fixed, then resumed from 02 in the same run: 01's entry is kept, 02 is now ok.
    tiny_notebook(notebook_dir / "02_second.ipynb", "Second notebook", ["y = 2", "print(y)"])
    first_seconds = manifest["notebooks"][0]["seconds"]
    again = reproduce("tiny", run="r1", start="02", reports_dir=reports, figures_dir=figures,
                      notebook_dir=notebook_dir)
    assert [(e["notebook"], e["status"]) for e in again["notebooks"]] == [("01_first.ipynb", "ok"),
                                                                           ("02_second.ipynb", "ok")]
    assert again["notebooks"][0]["seconds"] == first_seconds
    on_disk = json.loads((reports / "r1" / "manifest.json").read_text())
    assert on_disk["notebooks"] == again["notebooks"] and on_disk["finished"]
    assert "failed" not in (reports / "r1" / "report.html").read_text().split("<main>", 1)[1].split("</nav>")[0]


def executed_notebook(path: Path, title: str, image_dir: Path) -> Path:
    """An 'executed' notebook (outputs filled in by hand): a PNG output and a Markdown image file."""
    (image_dir / "diagram.png").write_bytes(PNG_1PX)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": KERNEL})
    code = nbformat.v4.new_code_cell("plot()", execution_count=1)
    code.outputs = [nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(PNG_1PX).decode(),
                                                                 "text/plain": "<Figure>"})]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n[![Open In Colab](https://colab.research.google.com/"
                                              "assets/colab-badge.svg)](https://colab.research.google.com/)"),
                nbformat.v4.new_markdown_cell("## Method\n\n![a diagram](diagram.png)\n\n$x^2$"),
                code,
                nbformat.v4.new_markdown_cell("## Results\n\n![remote](https://example.org/x.png)")]
    nbformat.write(nb, str(path))
    return path


def test_report_is_one_offline_page_with_a_table_of_contents(tmp_path):
    images = tmp_path / "src"
    images.mkdir()
    a = executed_notebook(tmp_path / "01_alpha.ipynb", "Alpha data", images)
    b = executed_notebook(tmp_path / "02_beta.ipynb", "Beta bins", images)
    manifest = {"run": "r", "preset": "tiny", "git": {"commit": "abc123", "dirty": False},
                "machine": {"summary": "x86_64, 2 CPU cores, no GPU"}, "wall_seconds": 12.0,
                "headline": {"runs": [{"path": "runs/05", "status": "completed", "test_mae": 4.0}], "notebooks": {}}}
    out = build_report([a, b], tmp_path / "report.html", manifest=manifest, image_dirs=[images, images])
    page = out.read_text()
    toc = page.split('<nav class="gc-toc"', 1)[1].split("</nav>", 1)[0]
    assert 'href="#nb01"' in toc and 'href="#nb02"' in toc
    assert "01_alpha: Alpha data" in toc and "02_beta: Beta bins" in toc
    assert 'id="nb01"' in page and 'id="nb02"' in page
    # sub-headings link to ids that exist, unique per notebook
    for anchor in re.findall(r'href="#([^"]+)"', toc):
        assert page.count(f'id="{anchor}"') == 1, anchor
    assert 'href="#nb01-Method"' in toc and 'href="#nb02-Results"' in toc
    # images: plot outputs and the Markdown image file are data URIs; nothing is fetched
    assert page.count('src="data:image/png;base64,') >= 4
    assert 'src="diagram.png"' not in page
    assert not re.search(r'<(script|img|link)\b[^>]*\b(src|href)="(https?:)?//', page)
    assert "colab-badge" not in page and "[remote]" in page
    assert "abc123" in page and "runs/05" in page and "<style" in page
    with_math = build_report([a], tmp_path / "math.html", mathjax_url="https://cdn.example/mathjax.js")
    assert "https://cdn.example/mathjax.js" in with_math.read_text()


def test_headline_collection_skips_damaged_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text("{not json")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "summary.json").write_text(json.dumps({"status": "completed", "test": {"mae": 1.5}}))
    (tmp_path / "headline_06.json").write_text(json.dumps({"ratio": 0.2}))
    (tmp_path / "headline_bad.json").write_text("[1, 2]")
    headline = collect_headline(tmp_path)
    assert [(r["path"], r["test_mae"]) for r in headline["runs"]] == [("b", 1.5)]
    assert headline["notebooks"] == {"ratio": 0.2}


@pytest.mark.notebook
def test_tiny_preset_end_to_end(tmp_path):
    """What CI runs: every notebook with the tiny preset; the report and the manifest exist and parse."""
    manifest = reproduce("tiny", run="ci", reports_dir=tmp_path / "reports", figures_dir=tmp_path / "figures")
    names = [p.name for p in list_notebooks()]
    assert [e["notebook"] for e in manifest["notebooks"]] == names
    assert all(e["status"] == "ok" and e["seconds"] > 0 for e in manifest["notebooks"])
    run_dir = tmp_path / "reports" / "ci"
    on_disk = json.loads((run_dir / "manifest.json").read_text())
    assert on_disk["preset"] == "tiny" and on_disk["parameters"]["quick"] is True
    assert on_disk["headline"]["runs"], "notebook 05's training summary.json should be collected"
    page = (run_dir / "report.html").read_text()
    for name in names:
        assert f'href="#nb{name[:2]}"' in page and (run_dir / name).is_file()
    assert 'src="data:image/png;base64,' in page
    assert not re.search(r'<(script|img|link)\b[^>]*\b(src|href)="(https?:)?//', page)
    assert any((tmp_path / "figures").glob("*.png"))
    # the README's results section is generated from this run's own files
    from gigacount_lib.readme_results import END, START, update_readme

    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nkept\n{START}\nold text\n{END}\nalso kept\n")
    update_readme(readme, run_dir)
    text = readme.read_text()
    assert "old text" not in text and text.startswith("# Title\n\nkept\n") and text.endswith(f"{END}\nalso kept\n")
    run = on_disk["headline"]["runs"][0]
    assert f"{run['test_mae']:.2f}" in text and "01_data_and_density_maps.ipynb" in text
    assert "Table 3" in text and "(figures/05_training_curves.png)" in text


def test_readme_results_refuses_a_folder_without_manifest_and_a_readme_without_markers(tmp_path):
    from gigacount_lib.readme_results import update_readme

    with pytest.raises(FileNotFoundError, match="no manifest"):
        update_readme(tmp_path / "README.md", tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"run": "x", "preset": "quick", "notebooks": []}))
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="no '<!-- results:start -->'"):
        update_readme(readme, tmp_path)
    assert readme.read_text() == "# no markers\n"
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        update_readme(readme, tmp_path)
