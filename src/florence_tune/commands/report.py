"""``florence-tune report``: rebuild a run's report.html, or compare two runs.

    florence-tune report runs/demo
    florence-tune report --compare runs/a runs/b --output comparison.html
"""

from __future__ import annotations

from pathlib import Path

from florence_tune import paths
from florence_tune.config import ReportConfig
from florence_tune.errors import UsageError
from florence_tune.reporting import report


def run(config: ReportConfig) -> Path:
    """Returns the HTML file written."""
    if config.output and Path(config.output).is_dir():
        raise UsageError(f"--output '{config.output}' is a folder; name the HTML file to write")
    if config.output:
        paths.check_creatable(Path(config.output), "--output")
    if config.compare:
        return report.write_comparison(*config.compare, output=config.output or "comparison.html",
                                       column=config.group_by)
    if config.run:
        return report.write_report(config.run, column=config.group_by, output=config.output)
    raise UsageError("report needs a run directory (florence-tune report RUN_DIR) or --compare RUN_A RUN_B")
