"""The examples in the public functions' docstrings run and print what they show."""

import doctest

import numpy as np

import knetcnn.api


def test_api_docstring_examples():
    result = doctest.testmod(knetcnn.api, extraglobs={"np": np}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 11  # one example per public function at least
    assert result.failed == 0


def test_every_public_function_documents_formula_shapes_and_example():
    for name in knetcnn.api.__all__:
        doc = getattr(knetcnn, name).__doc__
        assert doc and ">>>" in doc, name
        assert "shape" in doc.lower(), name
