"""``python tests/batch_killed_midway.py N hrinv-args...``: run the hrinv CLI, but die like a SIGKILL (``os._exit``,
no clean-up, exit status 75) in the middle of the outputs of the item after the first N: its first output is in
place, its second one half-written as a temporary file, no done marker.

The crash is injected here, around :meth:`hrinv.batch.OutputWriter.save`, so the library carries no test hook.
"""

import os
import sys

import hrinv.batch as batch
from hrinv.cli import main

CRASHED = 75


def _install(after: int) -> None:
    save = batch.OutputWriter.save
    seen = []  # item names in the order this process starts writing them

    def dying_save(self, role, filename, write):
        if self.item.name not in seen:
            seen.append(self.item.name)
        if len(seen) == after + 1 and self.outputs:  # item N+1, one output already in place
            with batch.atomic_write(self.path(filename)) as tmp:
                write(tmp)
                sys.stderr.write(f"batch_killed_midway: exiting in the middle of item {self.item.name}\n")
                sys.stderr.flush()
                os._exit(CRASHED)
        return save(self, role, filename, write)

    batch.OutputWriter.save = dying_save


if __name__ == "__main__":
    _install(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
