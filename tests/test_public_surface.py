"""What netmon exports, and where it installs."""

from __future__ import annotations

import inspect
import subprocess
import sys

import netmon
from netmon import errors


def test_exported_members():
    assert set(netmon.__all__) == {
        "DeviceEvent",
        "NetmonError",
        "Sample",
        "SeriesKey",
        "__version__",
    }
    for name in netmon.__all__:
        assert hasattr(netmon, name)


def test_one_exception_tree_written_in_its_docstring():
    classes = [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__ == errors.__name__
    ]
    assert set(errors.__all__) == {c.__name__ for c in classes}
    doc = errors.__doc__ or ""
    for cls in classes:
        assert issubclass(cls, errors.NetmonError)
        assert cls.__name__ in doc, f"{cls.__name__} missing from the tree in the docstring"


def test_errors_also_inherit_the_matching_builtin():
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.DatabaseUnavailableError, ConnectionError)
    assert issubclass(errors.SpoolError, OSError)
    assert issubclass(errors.QueryError, ValueError)
    assert issubclass(errors.SnmpTimeoutError, TimeoutError)
    assert issubclass(errors.SnmpSecurityError, PermissionError)
    assert issubclass(errors.SnmpNoSuchError, LookupError)
    assert issubclass(errors.SnmpMalformedReplyError, ValueError)


def test_collection_errors_have_distinct_stable_classes():
    classes = [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.CollectionError)
    ]
    names = [c.error_class for c in classes]
    assert len(names) == len(set(names)), names
    assert errors.SnmpTimeoutError.error_class == "timeout"


def test_no_generic_top_level_packages(tmp_path):
    # Run outside the repository so its folders are not on sys.path.
    code = (
        "import importlib.util, netmon.api, netmon.tasks, netmon.migrations.piccolo_app;"
        "print([n for n in ('api', 'tasks', 'migrations') if importlib.util.find_spec(n)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert out.stdout.strip() == "[]"
