"""Capacity planning: whether a run's stages fit their GPUs, and what it will cost, from the
model's config.json alone (`sheepdog plan`, and the fit check of `sheepdog validate`)."""

from sheepdog.capacity.plan import GPUS, fit_problems, format_plan, plan_run
from sheepdog.capacity.shape import ModelConfigError, ModelShape, locate_config, read_shape, shape_for, shape_from_config

__all__ = ["GPUS", "ModelConfigError", "ModelShape", "fit_problems", "format_plan", "locate_config", "plan_run",
           "read_shape", "shape_for",
           "shape_from_config"]
