pytest_plugins = ["tests.cluster.fixture"]
