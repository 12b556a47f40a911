"""`curate report`: one self-contained HTML page over the dataset folders of a pipeline run.

`pipeline` links the folders through their manifests, `collect` gathers each
section's data, `svg` draws the charts and `html` renders the page.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def build_report(
    paths: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    title: str = "curate report",
    examples: int = 3,
    clusters: int = 12,
    evals: Iterable[str | os.PathLike[str]] = (),
    models: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write the report over the folders named by `paths` to `out`; returns `out`.

    `examples` rows are shown per reject reason and `clusters` duplicate clusters
    per duplicate reason. Benchmark reports (`curate eval`'s JSON) and training folders
    (with `metrics.json`) beside the run are shown in the model section; `evals` and
    `models` name more. The file is written beside `out` and renamed into place.
    """
    from curate.report.collect import collect
    from curate.report.html import render
    from curate.report.pipeline import load_run

    paths = list(paths)
    data = collect(load_run(paths), examples=examples, clusters=clusters, paths=paths,
                   evals=[Path(p) for p in evals], trainings=[Path(p) for p in models])
    return write_page(render(data, title), out)


def write_page(text: str, out: str | os.PathLike[str]) -> Path:
    """Write `text` beside `out` and rename it into place (never a half-written page)."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


def build_comparison(
    run_a: str | os.PathLike[str],
    run_b: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    title: str = "curate compare",
    examples: int = 3,
) -> Path:
    """Write the page comparing two runs (rows per stage and reason, config differences,
    rows kept by one run and rejected by the other) to `out`; returns `out`."""
    from curate.report.compare import compare
    from curate.report.compare_html import render_compare

    return write_page(render_compare(compare(run_a, run_b, examples=examples), title), out)
