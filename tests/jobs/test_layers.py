"""Layers: the names the stage programs own (sheepdog_jobs.constants) are the ones the operator
uses, the stage programs do not import the operator's API models, and the local executor imports
nothing of kube/."""

from sheepdog.api import spec
from sheepdog_jobs import constants


def test_stage_names_and_the_judge_key_variable_agree_with_the_operator():
    assert constants.STAGES == spec.STAGES
    assert constants.JUDGE_API_KEY_ENV == spec.JUDGE_API_KEY_ENV


def test_the_unfixable_exit_code_agrees_with_the_operators_fail_job_rule():
    from sheepdog import stage_config
    from sheepdog.kube.jobs import fail_job_rule

    assert constants.EXIT_UNFIXABLE == stage_config.EXIT_UNFIXABLE
    assert fail_job_rule()["onExitCodes"]["values"] == [constants.EXIT_UNFIXABLE]


def test_stage_programs_do_not_import_the_operators_api_models():
    import ast
    from pathlib import Path

    root = Path(constants.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("sheepdog.api"), f"{path}:{node.lineno} imports {node.module}"


def test_the_local_executor_imports_nothing_of_kube():
    """The local executor shares the planner with the operator, never its Kubernetes side."""
    import ast
    from pathlib import Path

    import sheepdog.local

    for path in Path(sheepdog.local.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                assert not name.startswith("sheepdog.kube"), f"{path}:{node.lineno} imports {name}"
