"""``python -m snndist`` and the ``snndist`` command."""
import sys

from snndist.deps import check
from snndist.huge_pages import restart_with_huge_pages


def main() -> int:
    restart_with_huge_pages()  # first: it starts the process again, which should find little done
    # In a Python without the dependencies, say so in one line, not with a traceback.
    problem = check()
    if problem:
        print(f"snndist: error: {problem}", file=sys.stderr)
        return 2
    from snndist.cli import run

    return run()


if __name__ == "__main__":
    sys.exit(main())
