"""The reconstruction package's docstrings: every example runs, every public name is documented.

scikit-image's standard: each public function has numpydoc Parameters, Returns and Examples
sections (and Raises when its body raises), each public class an Attributes section.  The
examples are doctests, run here one test per module; a failure names the module and example.
"""

import doctest
import importlib
import inspect
import pkgutil
import re

import numpy as np
import pytest

import reconstruction

MODULES = sorted(info.name for info in pkgutil.iter_modules(reconstruction.__path__,
                                                             reconstruction.__name__ + "."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

def _sections(obj) -> set[str]:
    """numpydoc section titles of ``obj``'s docstring (a title underlined with dashes)."""
    doc = inspect.getdoc(obj) or ""
    return set(re.findall(r"^(\w[\w ]*)\n-{3,}\s*$", doc, flags=re.MULTILINE))


def _required(obj) -> set[str]:
    """Attributes for a class; Parameters, Returns, Examples for a function, and Raises when
    its own body raises."""
    if inspect.isclass(obj):
        return {"Attributes"}
    raises = re.search(r"^\s+raise \w", inspect.getsource(obj), flags=re.MULTILINE)
    return {"Parameters", "Returns", "Examples"} | ({"Raises"} if raises else set())


def _public():
    for name in reconstruction.__all__:
        obj = getattr(reconstruction, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield name, obj


@pytest.mark.parametrize("module_name", MODULES)
def test_examples_run(module_name):
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    failures = []
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, module_name):
        test.globs = {}  # each example imports what it uses
        output = []
        with np.printoptions(threshold=1000, edgeitems=3, linewidth=75, precision=8,
                             suppress=False, legacy=False):  # numpy's defaults, whatever ran before
            result = runner.run(test, out=output.append, clear_globs=True)
        if result.failed:
            failures.append("".join(output))
    assert not failures, f"{module_name}: failing examples\n" + "\n".join(failures)


def test_public_api_has_numpydoc_sections():
    missing = {name: sorted(_required(obj) - _sections(obj))
               for name, obj in _public()}
    missing = {name: sections for name, sections in missing.items() if sections}
    assert not missing, f"public names without these numpydoc sections: {missing}"


def test_public_functions_have_examples_that_run():
    """An Examples section holds at least one doctest (not prose only)."""
    finder = doctest.DocTestFinder(recurse=False)
    empty = [name for name, obj in _public()
             if inspect.isfunction(obj)
             and not any(t.examples for t in finder.find(obj, name))]
    assert not empty, f"public functions without a doctest: {empty}"
