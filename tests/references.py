"""Independent reference implementations, shared by the tests and the benchmarks (which use
them as baselines): a TFRecord/protobuf codec in pure Python, the Multi-Power-Law data's
schedules and published parameters, and the Chinchilla objective in numpy/scipy."""

from __future__ import annotations

import numpy as np
from scipy.special import huber, logsumexp

from steplaw_db.curve import Schedule

# -- TFRecord / protobuf --------------------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC = _crc_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = (c >> 8) ^ _CRC[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def fld(n: int, payload: bytes) -> bytes:
    return varint(n << 3 | 2) + varint(len(payload)) + payload


# -- Multi-Power Law data (../shared/data/multipowerlaw/README.md) --------------------------

TRAIN = ["cosine_24000", "constant_24000", "wsdcon_9"]
TEST = ["cosine_72000", "constant_72000", "wsd_20000_24000", "wsdld_20000_24000", "wsdcon_3", "wsdcon_18"]
#: The authors' fitted parameters [L0, A, alpha, B, C, beta, gamma] (data README).
PUBLISHED = {
    "25": [3.04045406, 0.52468604, 0.50786857, 363.78751622, 2.06560812, 0.58279013, 0.64142257],
    "100": [2.6514477, 0.60115152, 0.45295811, 437.9464276, 2.13245612, 0.59785199, 0.65523644],
    "400": [2.37474466, 0.65421216, 0.42878731, 523.42464371, 2.02462735, 0.59350493, 0.63472457],
}


def mpl_schedule(name: str) -> Schedule:
    """The schedules of the MPL data (README): warm-up 2160 steps to 3e-4, then the named shape."""
    kw = dict(peak_lr=3e-4, warmup_steps=2160)
    kind, _, rest = name.partition("_")
    if kind == "cosine":
        return Schedule(total_steps=int(rest), decay="cosine", floor=3e-5, **kw)
    if kind == "constant":
        return Schedule(total_steps=int(rest), decay="constant", **kw)
    if kind == "wsdcon":  # 3e-4 until step 8000, then int(rest) * 1e-5
        return Schedule(total_steps=16000, decay="wsd", floor=int(rest) * 1e-5, decay_start=8000, decay_steps=0, **kw)
    shape = {"wsd": "exponential", "wsdld": "linear"}[kind]
    return Schedule(total_steps=24000, decay="wsd", floor=3e-5, decay_start=20000, wsd_shape=shape, **kw)


# -- the Chinchilla loss law -----------------------------------------------------------------


def chinchilla_objective(N, D, L, delta=1e-3):
    """Hoffmann/Epoch's objective with numpy/scipy: the sum of Huber_delta(LSE(a - alpha ln N,
    b - beta ln D, e) - ln L) and its gradient, for scipy.optimize."""
    lnN, lnD, lnL = np.log(N), np.log(D), np.log(L)

    def f(p):
        a, b, e, alpha, beta = p
        t = np.stack([a - alpha * lnN, b - beta * lnD, np.full_like(lnN, e)])
        lse = logsumexp(t, axis=0)
        r = lse - lnL
        w = np.exp(t - lse)
        psi = np.clip(r, -delta, delta)
        grad = np.array(
            [
                (psi * w[0]).sum(),
                (psi * w[1]).sum(),
                (psi * w[2]).sum(),
                -(psi * w[0] * lnN).sum(),
                -(psi * w[1] * lnD).sum(),
            ]
        )
        return huber(delta, r).sum(), grad

    return f
