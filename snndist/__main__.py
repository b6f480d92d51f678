import sys

from snndist.deps import check

# Before anything else: in a Python without the dependencies, say so in one line, not with a traceback.
problem = check()
if problem:
    print(f"snndist: error: {problem}", file=sys.stderr)
    sys.exit(2)

from snndist.cli import run  # noqa: E402

sys.exit(run())
