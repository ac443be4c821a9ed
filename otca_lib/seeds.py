"""Every random stream of the library, named in one place.

A random draw is identified by a tuple of non-negative integer keys, and ``sample_seed(*keys)`` turns
the tuple into a 63-bit generator seed. The first keys name whose stream it is:

    sample_seed(run_seed, Stream.PROMPTS, iteration)             which training prompts an iteration uses
    sample_seed(sample, Stream.INIT_NOISE)                       a sample's initial noise x at s = 1
    sample_seed(sample, Stream.STEP_NOISE, t)                    the SDE noise of its step t

where ``sample`` is itself a seed, the identity of one trajectory (``Stream.SAMPLE``, ``Stream.EVAL``, ...).
Two uses can share a seed only by writing the same ``Stream`` member, so every use has its own member,
and tests/test_sample_statistics.py checks that the members and the seeds they give differ.

Why a hash of fixed-width keys and not ``numpy.random.SeedSequence(keys)``: SeedSequence pads its
entropy with zeros and splits large integers into 32-bit words, so (5,), (5, 0) and (5, 0, 0) give the
same seed, and so do (2, 5, 7) and (2, 5 + 7 * 2**32). Here each key is 8 bytes and the message length
encodes how many keys there are, so distinct tuples give distinct messages (and, up to 2^-63 hash
collisions, distinct seeds).

The sampling bug this layout rules out (fixed together with it): the first SDE step's noise was drawn
from a generator seeded like the initial noise, so it *was* the initial noise (correlation 1).
"""

from __future__ import annotations

import hashlib
from enum import IntEnum

import torch


class Stream(IntEnum):
    """The random streams. Values are part of every seed: changing one changes every draw of that stream."""
    PROMPTS = 1           # (run seed, PROMPTS, iteration): the order in which training prompts are drawn
    TRAINED_STEPS = 2     # (run seed, TRAINED_STEPS, iteration): which steps the 'random' rule trains
    SAMPLE = 3            # (run seed, SAMPLE, iteration, i): identity of training sample i
    GROUP = 4             # (run seed, GROUP, iteration, g): identity of group g's shared initial noise
    EVAL = 5              # (run seed, EVAL, i): identity of held-out evaluation sample i (every iteration, every run)
    SHUFFLE = 6           # (run seed, SHUFFLE, iteration): the update's shuffle of (sample, step) pairs
    INIT_NOISE = 7        # (sample, INIT_NOISE): the initial state, standard normal
    STEP_NOISE = 8        # (sample, STEP_NOISE, t): the standard normal noise of stochastic step t
    OBJECTIVE_SCORED = 9  # (sample, OBJECTIVE_SCORED): whether objective-aware credit scores this sample
    LORA_INIT = 10        # (seed, LORA_INIT): LoRA's random A matrices
    PRETRAIN_WEIGHTS = 11  # (seed, PRETRAIN_WEIGHTS): the untrained ShapesWorld models' weights
    PRETRAIN_DATA = 12    # (seed, PRETRAIN_DATA): pretraining captions, noise, noise levels, dropout
    RENOISE = 13          # (seed, RENOISE, k): fresh noise of step k in step-importance measurements
    SUBSET = 14           # (seed, SUBSET): a random subset of prompts for a measurement


def sample_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys in [0, 2^64), e.g. (run seed, Stream.SAMPLE, iteration, i).

    Distinct key tuples give distinct seeds (see the module docstring); the seed is the same on every
    machine and process, so a sample's randomness does not depend on where or in which batch it is drawn.
    """
    words = []
    for k in keys:
        k = int(k)
        if not 0 <= k < 2**64:
            raise ValueError(f"seed keys must be integers in [0, 2^64), got {k}: use a non-negative seed")
        words.append(k.to_bytes(8, "little"))
    digest = hashlib.blake2b(b"".join(words), digest_size=8, person=b"otca-seed").digest()
    return int.from_bytes(digest, "little") >> 1


def generator(*keys: int) -> torch.Generator:
    """A CPU torch.Generator seeded by sample_seed(*keys)."""
    return torch.Generator().manual_seed(sample_seed(*keys))


def unit_uniform(*keys: int) -> float:
    """A number in [0, 1) fixed by the keys (53 bits of sample_seed(*keys)), e.g. to select a sample by its seed."""
    return (sample_seed(*keys) >> 10) / 2.0**53
