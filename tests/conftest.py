import pytest

pytest_plugins = ["tests.cluster.fixture"]


def pytest_collection_modifyitems(config, items):
    """Two lanes for `pytest -n 2 --dist loadgroup` (make test): everything on the control plane
    shares one worker (one control plane per run, and those tests mostly wait on the API server,
    the Job controller and kwok), everything that runs the tiny model shares the other (CPU-bound);
    the unit tests fill in wherever a worker is free. Without xdist the marks do nothing."""
    for item in items:
        if "cluster" in item.fixturenames or item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.xdist_group("control-plane"))
        elif "tiny_model" in item.fixturenames or item.get_closest_marker("model"):
            item.add_marker(pytest.mark.xdist_group("model"))
