"""progress.py: which failures inside a collective are reported as a stuck or failed collective (a fake store)."""
import datetime

import pytest

from otca_lib.progress import KEY, CollectiveError, Progress


class Store:
    """The three store methods Progress uses, in memory."""

    def __init__(self):
        self.data = {}

    def set(self, key, value):
        self.data[key] = value.encode()

    def get(self, key):
        return self.data[key]

    def set_timeout(self, timeout: datetime.timedelta):
        pass


def two_ranks(where_other: str):
    store = Store()
    other = Progress(1, 2, 0.05, store=store)
    other.at(where_other)
    return Progress(0, 2, 0.05, store=store)


def test_a_rank_elsewhere_is_named():
    p = two_ranks("iteration 3: reward")
    with pytest.raises(CollectiveError, match="rank 1 is still at 'iteration 3: reward'"):
        with p.collective("iteration 3: reward gather"):
            raise RuntimeError("Timed out waiting 3000ms for recv operation to complete")


def test_an_error_every_rank_raises_at_the_same_place_keeps_its_own_type():
    class NonFinite(RuntimeError):
        pass

    p = two_ranks("iteration 3: update")
    with pytest.raises(NonFinite):  # (the trainer's NonFiniteError is a RuntimeError too: it must not be relabelled)
        with p.collective("iteration 3: update"):
            raise NonFinite("weights became non-finite")
    with pytest.raises(CollectiveError, match="every rank reached"):  # a timeout there is still the collective's
        with p.collective("iteration 3: update"):
            raise RuntimeError("Timed out waiting 3000ms")


def test_one_process_reraises_unchanged():
    with pytest.raises(RuntimeError, match="boom"):
        with Progress(0, 1, 0.05).collective("anywhere"):
            raise RuntimeError("boom")
    assert KEY.format(rank=0) == "otca/progress/0"
