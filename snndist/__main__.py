"""``python -m snndist`` and the ``snndist`` command."""
import gc
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
    from snndist.cli import main as command

    code = command()
    # What is left at exit is the heap of JAX, W&B, Ray and Orbax, which the interpreter's last collections
    # would walk (0.6 s on 2 cores) just before the process gives all of it back. Frozen, it is not walked;
    # the atexit handlers (W&B's, Ray's) still run.
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
