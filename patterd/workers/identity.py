"""Who a worker is: its index and the supervisor's run directory, passed in the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

WORKER_ENV = "PATTERD_WORKER"  # the worker's index (1..N); set only in worker processes
WORKERS_ENV = "PATTERD_WORKERS"  # N
RUN_DIR_ENV = "PATTERD_RUN_DIR"  # the supervisor's private directory (sockets, metrics files)
PARENT_FD_ENV = "PATTERD_SUPERVISOR_FD"  # read end of a pipe: EOF means the supervisor is gone
SECRET_ENV = "PATTERD_CLUSTER_SECRET"  # one secret shared by every worker (signed call tokens)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess mode
RELOAD_PEERS = "PATTERD_RELOAD_PEERS=1"  # notify line: a worker reloaded by API; reload the others too


@dataclass(frozen=True)
class WorkerIdentity:
    """A worker process's place among its siblings."""

    index: int
    run_dir: Path
    parent_fd: int | None = None
    count: int = 1  # how many workers the supervisor runs

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> WorkerIdentity | None:
        """The identity the supervisor gave this process; None when it is not a worker."""
        env = os.environ if environ is None else environ
        raw, run_dir = env.get(WORKER_ENV, ""), env.get(RUN_DIR_ENV, "")
        if not raw.isdigit() or not run_dir:
            return None
        fd, count = env.get(PARENT_FD_ENV, ""), env.get(WORKERS_ENV, "")
        index = int(raw)
        return cls(
            index, Path(run_dir), int(fd) if fd.isdigit() else None, int(count) if count.isdigit() else index
        )

    @property
    def http_socket(self) -> Path:
        """This worker's own HTTP socket (the same app as the shared port; siblings and operators use it)."""
        return http_socket(self.run_dir, self.index)

    def siblings(self) -> list[tuple[int, Path]]:
        """Every other worker's index and socket (a replaced worker's socket is its successor's)."""
        return [(i, http_socket(self.run_dir, i)) for i in range(1, self.count + 1) if i != self.index]


def http_socket(run_dir: Path, index: int) -> Path:
    """Worker `index`'s private HTTP socket in the run directory."""
    return run_dir / f"worker-{index}.sock"
