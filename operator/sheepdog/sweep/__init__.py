"""SelfAlignmentSweep: an ablation grid of SelfAlignmentRuns (issue 27; docs/sweeps.md).

grid.py    the cells, their child runs' names and manifests, every child validated (pure)
load.py    reading a sweep file with errors a user can act on
table.py   the comparison table: text, Markdown, CSV (pure)
plot.py    a plot per axis
policy.py  the operator's decisions for a sweep: children to create, the sweep's status (pure)
local.py   `sheepdog sweep`: the cells as local runs sharing one stage cache
"""
