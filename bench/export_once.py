"""Build one export in a fresh process and report rows/s and peak RSS (``ru_maxrss``)."""

import json
import resource
import sys
import time
from pathlib import Path

from storage.db import Database
from worker.exports import build_export


def main() -> None:
    database_url, export_id, folder = sys.argv[1:4]
    database = Database(database_url)
    started = time.perf_counter()
    status = build_export(database, export_id, Path(folder), 3600)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"status": status, "seconds": seconds, "peak_mb": peak_kib / 1024}))


if __name__ == "__main__":
    main()
