from tests.lane_times import LaneTimes, lane_of


def test_lane_is_read_from_the_loadgroup_suffix():
    assert lane_of("tests/test_front_door.py::test_make_demo@model-a") == "model-a"
    assert lane_of("tests/jobs/test_x.py::test_y[2-fp32]@real-stages") == "real-stages"
    assert lane_of("tests/unit/test_plan.py::test_z") == "(unit tests, any worker)"
    # an '@' inside a parameter is not a lane; after one, the group still is
    assert lane_of("tests/unit/test_a.py::test_b[user@host]") == "(unit tests, any worker)"
    assert lane_of("tests/unit/test_a.py::test_b[user@host]@control-plane") == "control-plane"


class _Report:
    def __init__(self, nodeid, when, duration):
        self.nodeid, self.when, self.duration = nodeid, when, duration


def test_setup_call_and_teardown_add_up_per_lane():
    times = LaneTimes()
    for when, secs in (("setup", 2.0), ("call", 5.0), ("teardown", 1.0)):
        times.pytest_runtest_logreport(_Report("t.py::a@model-a", when, secs))
    times.pytest_runtest_logreport(_Report("t.py::b@model-b", "call", 3.0))
    assert dict(times.seconds) == {"model-a": 8.0, "model-b": 3.0}
    assert dict(times.tests) == {"model-a": 1, "model-b": 1}
