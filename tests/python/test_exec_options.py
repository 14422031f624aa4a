"""knetcnn.set_options (process-wide defaults) and knetcnn.options (a thread-local context
manager), with validation."""

import threading
import warnings

import pytest

import knetcnn
from knetcnn._core import core


@pytest.fixture(autouse=True)
def restore_options():
    defaults, thread = core.get_default_options(), core.get_thread_options()
    yield
    core.set_default_options(defaults["algo"], defaults["workspace_limit"], defaults["allow_tf32"])
    core.set_thread_options(thread)


def test_defaults():
    assert core.get_default_options() == {"algo": "heuristic", "workspace_limit": None, "allow_tf32": False}
    assert knetcnn.get_options() == {"algo": "heuristic", "workspace_limit": None, "allow_tf32": False}
    with knetcnn.options() as o:
        assert (o.algo, o.workspace_limit, o.allow_tf32) == ("heuristic", None, False)
        assert "algo='heuristic'" in repr(o)


def test_set_options_sets_the_process_wide_defaults_field_by_field():
    previous = knetcnn.set_options(algo="benchmark")
    assert previous == {"algo": "heuristic", "workspace_limit": None, "allow_tf32": False}
    assert core.get_default_options() == {"algo": "benchmark", "workspace_limit": None, "allow_tf32": False}
    knetcnn.set_options(workspace_limit=1 << 20, allow_tf32=True)
    assert core.get_default_options() == {"algo": "benchmark", "workspace_limit": 1 << 20, "allow_tf32": True}
    knetcnn.set_options(workspace_limit=None)
    assert core.get_default_options()["workspace_limit"] is None
    knetcnn.set_options(**previous)
    assert core.get_default_options() == previous
    knetcnn.set_options(algo="benchmark")
    # Seen by other threads too.
    seen = {}
    t = threading.Thread(target=lambda: seen.update(core.effective_options()))
    t.start()
    t.join()
    assert seen["algo"] == "benchmark"


def test_context_manager_is_thread_local_and_restores():
    knetcnn.set_options(algo="heuristic", workspace_limit=4096)
    seen_inside_other_thread = {}
    made = knetcnn.options(algo="deterministic", allow_tf32=True)
    # Creating the context manager changes nothing anywhere, not even for an instant ...
    assert core.get_default_options() == {"algo": "heuristic", "workspace_limit": 4096, "allow_tf32": False}
    assert core.get_thread_options() == {}
    with made as o:
        # ... entering it leaves the defaults untouched ...
        assert core.get_default_options() == {"algo": "heuristic", "workspace_limit": 4096, "allow_tf32": False}
        # ... and this thread sees the override on top of them.
        assert core.effective_options() == {"algo": "deterministic", "workspace_limit": 4096, "allow_tf32": True}
        assert o.algo == "deterministic"
        t = threading.Thread(target=lambda: seen_inside_other_thread.update(core.effective_options()))
        t.start()
        t.join()
    assert seen_inside_other_thread == {"algo": "heuristic", "workspace_limit": 4096, "allow_tf32": False}
    assert core.effective_options() == {"algo": "heuristic", "workspace_limit": 4096, "allow_tf32": False}
    assert core.get_thread_options() == {}


def test_nested_blocks_and_exceptions_restore_the_outer_state():
    with knetcnn.options(algo="benchmark"):
        with knetcnn.options(workspace_limit=0):
            assert core.effective_options()["algo"] == "benchmark"
            assert core.effective_options()["workspace_limit"] == 0
            with pytest.raises(KeyError):
                with knetcnn.options(algo="deterministic"):
                    assert core.effective_options()["algo"] == "deterministic"
                    raise KeyError("boom")
            assert core.effective_options() == {"algo": "benchmark", "workspace_limit": 0, "allow_tf32": False}
        assert core.get_thread_options() == {"algo": "benchmark"}
    assert core.get_thread_options() == {}


def test_override_follows_later_changes_of_the_defaults_it_does_not_set():
    with knetcnn.options(algo="deterministic"):
        knetcnn.set_options(allow_tf32=True)
        assert core.get_default_options()["allow_tf32"] is True
        assert core.effective_options() == {"algo": "deterministic", "workspace_limit": None, "allow_tf32": True}


def test_an_options_object_cannot_be_entered_twice_at_once():
    o = knetcnn.options(algo="benchmark")
    with o:
        with pytest.raises(RuntimeError, match="already in use"):
            o.__enter__()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"algo": "fastest"}, ValueError, r"algo='fastest': algo must be one of"),
        ({"algo": 1}, TypeError, r"algo=1: algo must be a str"),
        ({"algo": None}, TypeError, r"algo=None"),
        ({"workspace_limit": -1}, ValueError, r"workspace_limit=-1: workspace_limit must be a number of bytes >= 0"),
        ({"workspace_limit": 1.5}, TypeError, r"workspace_limit=1.5: workspace_limit must be an int"),
        ({"workspace_limit": True}, TypeError, r"workspace_limit=True"),
        ({"workspace_limit": "1GB"}, TypeError, r"workspace_limit='1GB'"),
        ({"allow_tf32": 1}, TypeError, r"allow_tf32=1: allow_tf32 must be True or False"),
        ({"allow_tf32": "yes"}, TypeError, r"allow_tf32='yes'"),
    ],
)
def test_invalid_values_name_the_option_and_change_nothing(kwargs, error, message):
    before = core.get_default_options()
    with pytest.raises(error, match="knetcnn.set_options: " + message):
        knetcnn.set_options(**kwargs)
    with pytest.raises(error, match="knetcnn.options: " + message):
        knetcnn.options(**kwargs)
    assert core.get_default_options() == before
    with pytest.raises(TypeError):
        knetcnn.set_options(algorithm="benchmark")  # unknown keyword


def test_numpy_integers_and_bools_are_accepted():
    np = pytest.importorskip("numpy")
    knetcnn.set_options(workspace_limit=np.int64(1 << 16), allow_tf32=np.bool_(True))
    assert core.get_default_options() == {"algo": "heuristic", "workspace_limit": 1 << 16, "allow_tf32": True}


def test_core_setters_validate_too():
    with pytest.raises(ValueError, match="algo='x'"):
        core.set_default_options("x", None, False)
    with pytest.raises(ValueError, match="unknown option 'speed'"):
        core.set_thread_options({"speed": 1})


def test_an_options_object_never_entered_warns_that_it_changed_nothing():
    with pytest.warns(RuntimeWarning, match=r"knetcnn.options\(algo='benchmark'\) was never used in a `with` block"):
        knetcnn.options(algo="benchmark")  # dropped at once: almost surely meant set_options
    assert core.get_default_options()["algo"] == "heuristic"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with knetcnn.options(algo="benchmark"):
            pass
        knetcnn.options()  # nothing asked for: nothing to warn about
