"""Run a resumable scoring job with a slow fake model (killed with SIGKILL by tests/llm/test_jobs.py).

Usage: python run_fake_job.py STORE LOG RUN_ID N BATCH_SIZE DELAY
Prints the job result as JSON on success.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_llm import TEMPLATE, FakeModel, make_inputs

from llmboost.llm.jobs import run_job
from llmboost.llm.store import ScoreStore


def main(argv: list[str]) -> int:
    store_path, log_path, run_id, n, batch_size, delay = argv
    model = FakeModel(delay=float(delay), log_path=log_path, run_id=run_id)
    with ScoreStore(store_path) as store:
        result = run_job(model, store, TEMPLATE, make_inputs(int(n)), batch_size=int(batch_size), progress=False)
    print(json.dumps({"total": result.total, "skipped": result.skipped, "computed": result.computed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
