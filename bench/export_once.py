"""Build one export in a fresh process and report rows/s and its peak RSS.

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
    print(json.dumps({"status": status, "seconds": seconds, "peak_mb": peak_kib() / 1024}))


def peak_kib() -> int:
    """This process's own high-water RSS: ``VmHWM`` on Linux. Not ``ru_maxrss``, which Linux
    carries over from the parent through fork and exec, so that an export started by a
    bench that held 180 MB reported 180 MB whatever the export itself used."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    main()
