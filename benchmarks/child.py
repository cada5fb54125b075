"""Run one measure, or build one template database, in this fresh process and print the result as JSON.

    python -m benchmarks.child '{"measure": "put", "design": "raw", "folder": "...", ...}'

The runner starts this module once per measure and repetition, so no
measure inherits another's caches, threads or open connections.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from .designs import DESIGNS, open_design
from .measures import MEASURES_BY_KEY, Context
from .sizes import QUICK, Sizes

# The line before the JSON result, so output printed by a library cannot be mistaken for it.
RESULT_MARKER = "--- persistentq benchmark result ---"


def build_template(kind: str, design_key: str, folder: Path, sizes: Sizes, synchronous: str) -> str:
    """Build a big queue once per run, to be copied for each repetition; return what `copy_template` copies.

    "backlog" contains `big_backlog` queued jobs. "views" contains as many
    jobs, all but 2% of them finished, as a queue that has run for a while does.
    """
    design = open_design(design_key, folder, synchronous)
    design.fill([f"job-{index}" for index in range(sizes.big_backlog)])
    if kind == "views":
        design.finish_jobs(keep_queued=sizes.big_backlog // 50)
    design.close()
    return design.template_source()


def main(argv: list[str]) -> int:
    request = json.loads(argv[1])
    sizes = QUICK if request["quick"] else DESIGNS[request["design"]].full_sizes
    folder = Path(request["folder"])
    if "template" in request:
        result = {"file": build_template(request["template"], request["design"], folder, sizes, request["synchronous"])}
    else:
        measure = MEASURES_BY_KEY[request["measure"]]
        context = Context(
            design=request["design"],
            folder=folder,
            sizes=sizes,
            synchronous=request["synchronous"],
            templates=request.get("templates", {}),
        )
        result = measure.run(context)
        result["sizes"] = asdict(sizes)
    print(RESULT_MARKER)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
