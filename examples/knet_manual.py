"""Every worked example of Knet's convolution/pooling documentation, run with knetcnn.

Each case of the spec's vectors.json marked "seed" is printed as the knetcnn call, the Knet
(Julia) call it corresponds to, the result and the expected value. Knet arrays are column-major:
a knetcnn array of shape (N, C, *spatial) is the same memory as a Knet array of size
(reversed spatial..., C, N), and per-axis keyword tuples are reversed too.

    python examples/knet_manual.py [path/to/vectors.json]
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

import knetcnn

# The live spec beside the repository, else the repository's copy of it (tests/data).
_HERE = os.path.dirname(os.path.abspath(__file__))
_LIVE = os.path.join(_HERE, "..", "..", "shared", "spec", "vectors.json")
DEFAULT_VECTORS = _LIVE if os.path.isfile(_LIVE) else os.path.join(_HERE, "..", "tests", "data", "vectors.json")


def julia_array(spec) -> str:
    """The Julia expression for a C-order array: same data, reversed size."""
    data = ", ".join(f"{v:g}" for v in spec["data"])
    size = ", ".join(str(s) for s in reversed(spec["shape"]))
    return f"reshape(Float64[{data}], {size})"


def julia_keyword(value) -> str:
    if isinstance(value, list):
        return "(" + ", ".join(str(v) for v in reversed(value)) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def python_keyword(value) -> str:
    return str(tuple(value)) if isinstance(value, list) else str(value)


def run_case(case) -> bool:
    op, args, kwargs = case["op"], case["args"], case["kwargs"]
    arrays = {k: np.array(v["data"], dtype=np.float64).reshape(v["shape"]) for k, v in args.items()}
    result = getattr(knetcnn, op)(*arrays.values(), **kwargs)
    expect = np.array(case["expect"]["data"], dtype=np.float64).reshape(case["expect"]["shape"])
    ok = result.shape == expect.shape and np.allclose(result, expect)
    py_kw = "".join(f", {k}={python_keyword(v)}" for k, v in kwargs.items())
    jl_kw = ", ".join(f"{k}={julia_keyword(v)}" for k, v in kwargs.items())
    print(f"== {case['source']}")
    for name, a in arrays.items():
        print(f"   {name} = np.array({a.ravel().tolist()}).reshape{a.shape}")
    print(f"   knetcnn: knetcnn.{op}({', '.join(arrays)}{py_kw})")
    julia_args = ", ".join(f"{n}" for n in arrays)
    print(f"   Knet:    {op}({julia_args}{'; ' + jl_kw if jl_kw else ''})   with "
          + "; ".join(f"{n} = {julia_array(args[n])}" for n in arrays))
    print(f"   result   {result.ravel().tolist()} shape {result.shape}")
    print(f"   expected {expect.ravel().tolist()} shape {expect.shape}   {'OK' if ok else 'MISMATCH'}")
    return ok


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else DEFAULT_VECTORS
    with open(path) as f:
        cases = [c for c in json.load(f)["cases"] if c["source"].startswith("seed")]
    results = [run_case(c) for c in cases]
    print(f"\n{sum(results)} of {len(results)} Knet manual examples match")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
