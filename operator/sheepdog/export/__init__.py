"""Taking a model away: the model of one iteration as a standalone Hugging Face directory with
a model card, written to a directory or uploaded to S3.

The same code serves `sheepdog export RUN` (in process) and the export step of a run with
`spec.export` (the command `python -m sheepdog.export --config ...`, a Job on a cluster and a
subprocess locally). It needs no torch: a merged model directory already holds everything a
loader needs (config, safetensors, tokenizer), so exporting is copying plus the card.
"""

from sheepdog.export.config import ExportConfig, ExportError, export_command, export_config
from sheepdog.export.write import export_model

__all__ = ["ExportConfig", "ExportError", "export_command", "export_config", "export_model"]
