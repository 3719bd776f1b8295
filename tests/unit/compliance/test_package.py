"""The package's public names resolve, though it imports its modules on first use."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import dispatcher.compliance as compliance


def test_every_public_name_resolves_to_the_object_its_module_defines():
    for name in compliance.__all__:
        value = getattr(compliance, name)
        assert not inspect.ismodule(value), name  # compose/segments: the function, not the module
        home = getattr(value, "__module__", None)
        if home and home.startswith("dispatcher.compliance."):
            assert getattr(importlib.import_module(home), name, value) is value, name


def test_a_name_the_package_does_not_export_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_rule"):
        compliance.no_such_rule  # noqa: B018


def test_the_submodules_of_compose_and_segments_do_not_shadow_their_functions():
    code = (
        "import dispatcher.compliance.segments, dispatcher.compliance.compose\n"
        "from dispatcher.compliance import segments, compose\n"
        "import inspect; assert callable(segments) and not inspect.ismodule(segments)\n"
        "assert callable(compose) and not inspect.ismodule(compose)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
