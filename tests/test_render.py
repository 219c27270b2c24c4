"""README blocks are generated from result files, idempotently; stale blocks are detected."""

from __future__ import annotations

import json

from hybrid_zoo.render import render_readme
from hybrid_zoo.results import RESULTS_DIR


def test_blocks_are_filled_from_results_and_rendering_is_idempotent(tmp_path):
    text = 'intro\n<!-- BEGIN model_table -->\n<!-- END model_table -->\n<!-- BEGIN bench_table -->\nold\n<!-- END bench_table -->\n'
    once = render_readme(text, RESULTS_DIR)
    stats = json.loads((RESULTS_DIR / 'model_stats.json').read_text())
    for name, row in stats['models'].items():
        assert f'| `{name}` |' in once and f'{row["gmacs"]:.3f}' in once
    assert render_readme(once, RESULTS_DIR) == once
    empty = render_readme(text, tmp_path)  # no result files: the block says so instead of keeping stale numbers
    assert 'No results yet' in empty and 'old' not in empty
