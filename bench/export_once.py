"""Build one export in a fresh process and report rows/s and peak RSS (``ru_maxrss``).

``python -m bench.export_once DATABASE_URL EXPORT_ID EXPORT_DIR VAR_DIR``: the build signs
its snapshot's checkpoint with explicit settings (the bench database, its fixed secret
key, the run's own folders), never with ``Settings.from_env()``, which could create a
``var/secret_key`` in the working directory.
"""

import json
import resource
import sys
import time
from pathlib import Path

from bench.services import SECRET_KEY
from storage.db import Database
from storage.settings import Settings
from worker.exports import build_export

TTL_SECONDS = 3600


def main() -> None:
    database_url, export_id, folder, var_dir = sys.argv[1:5]
    database = Database(database_url)
    settings = Settings(
        var_dir=Path(var_dir),
        database_url=database_url,
        export_dir=Path(folder),
        export_ttl_seconds=TTL_SECONDS,
        secret_key=SECRET_KEY,
    )
    started = time.perf_counter()
    status = build_export(database, export_id, Path(folder), TTL_SECONDS, settings=settings)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"status": status, "seconds": seconds, "peak_mb": peak_kib / 1024}))


if __name__ == "__main__":
    main()
