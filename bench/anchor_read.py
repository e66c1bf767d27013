"""The read stage the anchor pipeline (../shared/bench-anchor) imports as `bench_read` but does not ship.

`bench_transform.raw_arrow()` wants `_np_columns()`: each of the 25 business fields of data/policies.dat as one
contiguous buffer of fixed-width bytes (n records x field width), which it wraps as Arrow fixed-size binary. This is
the "numpy record view" its README names: a structured view of the whole file, one contiguous copy per field.
bench/e2e_bench.py copies this file into its copy of the anchor as bench_read.py only when the anchor has none.
"""

import numpy as np

from layout import FWF, OFFSETS, RECLEN


def _np_columns() -> dict[str, np.ndarray]:
    fields = [(name, offset, width) for name, offset, width, _ in OFFSETS if name != "filler"]
    record = np.dtype({"names": [f[0] for f in fields], "formats": [f"S{f[2]}" for f in fields],
                       "offsets": [f[1] for f in fields], "itemsize": RECLEN})
    records = np.fromfile(FWF, dtype=record)
    return {name: np.ascontiguousarray(records[name]) for name, _, _ in fields}
