"""Evaluation between iterations (ISHEEP.md stage fact 8): IFEval through lm-evaluation-harness's
checkers, a held-out set scored by a judge, and other lm-evaluation-harness tasks.
The evaluate stage (stages/evaluate.py) puts them together."""
