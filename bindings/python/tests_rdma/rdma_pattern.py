"""The data pattern the RDMA tests and their peer processes (ours and the original
DLSlime's) fill and check buffers with. Plain Python only: the original's peer imports
it too."""

_BASE = bytes(range(251))


def pattern(n, seed):
    """Byte i is (i + seed) % 251 (built by slicing: Python loops are slow under TCG)."""
    k = seed % 251
    unit = _BASE[k:] + _BASE[:k]
    return (unit * (n // 251 + 1))[:n]
