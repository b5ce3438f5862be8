"""Compare two runs of mixforge file by file, timings aside: the check that a change to the code
changed no output (issue 24's "byte-identical before and after").

    python scripts/compare_workspaces.py OLD NEW [--workspace mixforge-demo]

OLD and NEW are the folders the commands ran in (e.g. two `make demo` runs, each moved aside after
it finished; run both from the same folder path and the same installed source path, since
documents record the path of their file, and give the source files one mtime, e.g. `touch -d @0`,
since stage fingerprints key on input files' size and mtime). Compared: every published file under the workspace and
its export (stage records, ledger, components, token shards, search proposals, verify figures,
export shards and manifest: JSON without timings, runs-table rows without wall time, other files
by sha256), and the kept documents (id, xxh3 of text). Timings and the plots are left out, as in
scripts/fault_inject.py, whose comparison this is. Prints a count per top-level folder and every
difference; exit 1 on any.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_inject import differences, outputs  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--workspace", default="mixforge-demo", help="the workspace folder inside each run's folder")
    args = parser.parse_args()
    old, new = outputs(args.old, args.workspace), outputs(args.new, args.workspace)
    folders = Counter(Path(k).parts[1] if len(Path(k).parts) > 2 else Path(k).parts[0] for k in old)
    print(f"compared {len(old)} outputs of {args.old} with {len(new)} of {args.new}:")
    print("  " + ", ".join(f"{name} {n}" for name, n in sorted(folders.items())))
    found = differences(new, old, show=10**6)
    for line in found:
        print("  " + line)
    kept = len(old["kept documents (id, xxh3 of text)"])
    print(f"{len(found)} difference(s); {kept} kept documents" + (" identical" if not found else ""))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
