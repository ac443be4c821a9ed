"""Where every process of a distributed run is, so that a collective that times out names the ranks it waited for.

Each process writes its position ("iteration 3: sample", "iteration 3: reward gather", ...) and the time into the
process group's key-value store before each phase and each collective (gather, all-reduce, barrier). When a
collective fails, typically because one process is stuck (alive, not dead) and the others waited
``dist_timeout_minutes``, the failing process reads every rank's last position and raises CollectiveError naming
the ranks that are somewhere else, e.g.

    the collective 'iteration 0: reward gather' failed after 3 s (dist_timeout_minutes=0.05): rank 1 is still at
    'iteration 0: reward' (for 3.1 s), so it is stuck or far slower than the others ...

The store is the rendezvous store (torchrun's, accelerate launch's): it is not the collective's transport, so it
still answers when a gloo / NCCL collective has timed out. On one process every method does nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import time

import torch.distributed as dist

KEY = "otca/progress/{rank}"


class CollectiveError(RuntimeError):
    """A collective failed; the message says where every process was."""


class Progress:
    def __init__(self, rank: int, world_size: int, timeout_minutes: float, store=None):
        """store: the key-value store (set / get / set_timeout); default: the process group's, when there is one."""
        self.rank, self.world_size, self.timeout_minutes = rank, world_size, timeout_minutes
        self.store = store
        if store is None and world_size > 1 and dist.is_available() and dist.is_initialized():
            self.store = dist.distributed_c10d._get_default_store()
        self.where = "start"

    def at(self, where: str) -> None:
        """Record that this process has reached `where` (a phase, or a collective it is about to wait in)."""
        self.where = where
        if self.store is not None:
            self.store.set(KEY.format(rank=self.rank), f"{time.time():.3f} {where}")

    @contextlib.contextmanager
    def collective(self, where: str):
        """Wait in a collective at `where`; a failure there becomes a CollectiveError saying where the others are."""
        phase = self.where
        self.at(where)
        start = time.time()
        try:
            yield
        except RuntimeError as err:
            # Only a failure of the collective itself is reported as one: a timeout or a backend error, or any error
            # while another rank is elsewhere. An error every rank raises at the same place (a non-finite update,
            # decided alike on every rank) keeps its own type and message.
            if self.store is None:
                raise
            distributed = isinstance(err, dist.DistError) or "timed out" in str(err).lower()
            if not (distributed or any(w != where for w, _ in self.positions().values())):
                raise
            raise CollectiveError(self.report(where, time.time() - start, err)) from err
        self.where = phase

    def positions(self) -> dict[int, tuple[str, float]]:
        """{rank: (its last position, seconds since it got there)}, as far as the store answers (5 s at most)."""
        self.store.set_timeout(datetime.timedelta(seconds=5))
        out = {}
        for r in range(self.world_size):
            try:
                stamp, _, where = self.store.get(KEY.format(rank=r)).decode().partition(" ")
                out[r] = (where, time.time() - float(stamp))
            except Exception:  # a rank that never wrote (or a store that is gone): unknown
                continue
        return out

    def report(self, where: str, waited: float, err: BaseException) -> str:
        pos = self.positions()
        elsewhere = {r: p for r, p in pos.items() if p[0] != where}
        silent = [r for r in range(self.world_size) if r not in pos]
        parts = [f"rank {r} is still at {w!r} (for {age:.1f} s)" for r, (w, age) in sorted(elsewhere.items())]
        parts += [f"rank {r} never reported a position" for r in silent]
        who = "; ".join(parts) if parts else f"every rank reached {where!r}: the collective itself failed"
        hint = ("so it is stuck or far slower than the others: look at that process (py-spy dump --pid PID), or raise "
                "dist_timeout_minutes if it is only slow" if parts else "see the error below")
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        return (f"rank {self.rank}: the collective {where!r} failed after {waited:.0f} s (dist_timeout_minutes="
                f"{self.timeout_minutes}): {who}, {hint}. [{type(err).__name__}: {first}]")
