"""Counter-based random numbers: every episode draws from its own seed.

A recorded episode is reproducible from its seed alone, whichever world ran it,
how many worlds there were and what ran before: the reset distribution, domain
randomization and policy noise of the episode are all functions of
(episode seed, stream, counter). That is what lets an interrupted collection
resume and still produce the episodes an uninterrupted run would have.

The generator is SplitMix64 (Steele, Lea and Flood 2014), whose k-th output for
state s is mix(s + (k + 1) * gamma), evaluated for whole tensors at once in
int64 arithmetic (two's-complement wrap-around is the modulo 2^64; logical
shifts are arithmetic shifts masked). Doubles take the top 53 bits.
"""

from __future__ import annotations

import math

import torch

_GAMMA = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """The int64 with the same 64 bits as the unsigned `value`."""
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser, a bijection of 64-bit patterns (int64 tensors)."""
    x = (x ^ _shift_right(x, 30)) * _signed(_MUL1)
    x = (x ^ _shift_right(x, 27)) * _signed(_MUL2)
    return x ^ _shift_right(x, 31)


def as_keys(seeds: torch.Tensor | int | list[int]) -> torch.Tensor:
    """Seeds (any integers) as int64 keys, on the device of a tensor (else the CPU)."""
    keys = torch.as_tensor(seeds)
    if keys.dtype.is_floating_point or keys.dtype == torch.bool:
        raise ValueError(f"seeds must be integers, got dtype {keys.dtype}")
    return keys.to(torch.int64)


def bits(keys: torch.Tensor, start: int | torch.Tensor, count: int) -> torch.Tensor:
    """Outputs start..start+count-1 of each key's SplitMix64 stream, int64 `[n, count]`.

    `start` is one counter for all keys or an int64 `[n]` counter per key. The
    outputs lie on the keys' device.
    """
    keys = as_keys(keys)
    start = torch.as_tensor(start, dtype=torch.int64, device=keys.device).reshape(-1, 1)
    counters = start + torch.arange(count, device=keys.device)
    return mix64(keys[:, None] + (counters + 1) * _signed(_GAMMA))


def uniform(keys: torch.Tensor, start: int | torch.Tensor, count: int) -> torch.Tensor:
    """float64 `[n, count]` uniform in [0, 1) from counters start..start+count-1."""
    return _shift_right(bits(keys, start, count), 11).double() * 2.0**-53


def normal(keys: torch.Tensor, start: int | torch.Tensor, count: int) -> torch.Tensor:
    """float64 `[n, count]` standard normal (Box-Muller), using 2 * count counters."""
    u = uniform(keys, start, 2 * count)
    radius = torch.sqrt(-2.0 * torch.log1p(-u[:, :count]))  # 1 - u in (0, 1]
    return radius * torch.cos(2.0 * math.pi * u[:, count:])


def substream(keys: torch.Tensor, stream: int) -> torch.Tensor:
    """Keys of an independent stream (`stream` names a use: reset, policy, noise...)."""
    keys = as_keys(keys)
    return mix64(keys ^ mix64(torch.tensor(_signed(stream), device=keys.device)))


def episode_seeds(seed: int, episodes: torch.Tensor | list[int]) -> torch.Tensor:
    """Seed of each global episode index of a collection run with `seed`, int64 `[n]`.

    Episode e gets output e of the stream keyed by mix(seed): distinct seeds give
    unrelated episode seeds, and episode e's seed does not depend on the others.
    """
    index = as_keys(episodes).reshape(-1)
    key = mix64(torch.tensor(_signed(seed)))
    return mix64(key + (index + 1) * _signed(_GAMMA))
