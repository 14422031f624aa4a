"""Where the golden vectors (the spec's vectors.json) are read from, for every test module.

The live contract is shared/spec/vectors.json beside the repository. A clone made anywhere else
(git clone . /tmp/fresh) has no shared/ beside it, so the repository carries a copy in
tests/data/; test_vectors checks that the copy still equals the live file wherever both exist.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIVE = REPO.parent / "shared" / "spec" / "vectors.json"
COPY = REPO / "tests" / "data" / "vectors.json"
VECTORS = LIVE if LIVE.is_file() else COPY
