import pytest

pytest_plugins = ["tests.cluster.fixture"]


# tryfirst: xdist reads the groups in its own pytest_collection_modifyitems, which would
# otherwise run before this one and find none (seen: every worker started a control plane).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Lanes for `pytest -n 3 --dist loadgroup` (make test): everything on the control plane
    shares one worker (one control plane per run; those tests mostly wait on the API server, the
    Job controller and kwok), and the tiny-model tests go module by module (a module's fixtures
    stay in one process) to the other workers, so two CPU-bound model modules use the two cores
    while the control-plane lane waits. The unit tests fill in wherever a worker is free. Without
    xdist the marks do nothing."""
    for item in items:
        if "cluster" in item.fixturenames or item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.xdist_group("control-plane"))
        elif "tiny_model" in item.fixturenames or item.get_closest_marker("model"):
            item.add_marker(pytest.mark.xdist_group(f"model:{item.module.__name__}"))
