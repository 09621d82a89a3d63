"""Each request group's options ranked by cost, so the flow can keep any group's cheapest few.

Options of group g are the columns of a groups x columns matrix. A column is one cold-start grade of one bucket:
the bucket's pools whose cold start for g's games costs exactly that grade (coldstart.py; without image sizes
the grades are 0, warm, and the flat penalty, so a bucket has at most two columns). Option (g, c) exists where the
bucket is within g's latency target and the grade has open slots for g's signature; it costs price + λ·latency +
the grade.

Costs are kept as packed integers (cost rounded down to a power-of-two quantum, then the column) in 32 bits
when they fit: NumPy partitions and sorts 32-bit integers with SIMD, several times faster than an int64
argsort, and every batch ranks a ~600 x 600 matrix. Cut points round up to a whole quantum, so a cut keeps
every option as cheap as the last one it had to keep (ties included); the rounding never drops one.
On the 2-core VMs this was built on, fresh large arrays cost more in page faults than the arithmetic on them,
so temporaries are few and small.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from broker.placement.frame import I64

#: Options per group sorted up front; groups that need more get their whole row sorted on demand. At 24, a fifth
#: of a default-trace batch's groups (each keeps options holding the batch's demand) needed the whole row; at 48
#: about one in a hundred (the ranking's time went from ~3.7 to ~2.9 ms of CPU).
_TOP = 48


class OptionRanking:
    """Rank every group's options once; then cut prefixes holding given numbers of slots."""

    def __init__(
        self,
        col_lat: npt.NDArray[np.integer],
        target: I64,
        price: I64,
        lam: int,
        col_bucket: I64,
        col_extra: I64,
        slots: I64,
        sig: I64,
    ) -> None:
        """`col_lat[g, c]`: the latency from g's venue to column c's bucket, clipped to int32 (the ranking takes it
        over: its buffer becomes the keys); `target[g]`, `price[b]`; per column its bucket and its cold-start grade
        `col_extra`; `slots[sig, column]` and `sig[g]`."""
        self.n_cols = n_cols = int(col_bucket.size)
        self.bits = bits = max(1, (n_cols - 1).bit_length())
        max_cost = int(price.max(initial=0)) + lam * int(target.max(initial=0)) + int(col_extra.max(initial=0))
        wide = max_cost >= (1 << 31) - 1 or bits > 20
        self.dtype = dtype = np.int64 if wide else np.int32
        #: rounded costs are below `levels`; the level `levels` itself means "no such option"
        self.levels = levels = (1 << ((63 if wide else 31) - bits)) - 1
        shift = (max_cost // levels).bit_length()
        col_index = np.arange(n_cols, dtype=np.int64)
        col_cost = price[col_bucket] + col_extra
        # an option exists where it is within reach and has slots for the group's signature
        # in col_lat's own width (no groups x columns int64 copy); a target above it reaches every clipped latency
        present = col_lat <= np.minimum(target, np.iinfo(col_lat.dtype).max).astype(col_lat.dtype)[:, None]
        present &= (slots > 0)[sig]
        # Every key is absent's (level `levels`, then the column) plus, where the option exists, its rounded
        # cost's difference from that: branch-free passes, several times faster than a masked write (copyto,
        # putmask) on this irregular mask. Latencies are multiplied by 0 or 1 first, so no absent one overflows.
        absent_key = (levels << bits | col_index).astype(dtype)
        # in col_lat's buffer where the widths match: a fresh matrix costs more in page faults than the pass
        keys = np.multiply(col_lat, present, out=col_lat if col_lat.dtype == dtype else None, dtype=dtype)
        if lam % (1 << shift) == 0:
            # lam·latency is a whole number of quanta: a key is latency · (lam's quanta, packed) plus the
            # column's own part, rounded and packed once per column
            keys *= (lam >> shift) << bits
            keys -= ((levels - (col_cost >> shift)) << bits).astype(dtype)
        else:
            keys *= lam
            keys += col_cost.astype(dtype)
            keys >>= shift
            keys -= levels
            keys <<= bits
        keys *= present
        keys += absent_key
        self.keys = keys
        self.slots = slots
        self.sig = sig
        self.n_options = present.view(np.uint8).sum(axis=1, dtype=np.int32).astype(np.int64)
        self._none = np.asarray((levels << bits) - 1, dtype=dtype)  # below every absent key
        width = min(_TOP, n_cols)
        # in place: a key carries its column, so a row's order does not matter to what reads the keys later
        if width < n_cols:
            keys.partition(width - 1, axis=1)
        top = keys[:, :width].copy()
        top.sort(axis=1)
        self._top = top
        # slots of (sig[g], column) by one flat gather
        flat = (sig * n_cols)[:, None] + (top & ((1 << bits) - 1))
        self._top_cum = np.cumsum(np.take(slots, flat), axis=1)

    def _cut_keys(self, sorted_keys: npt.NDArray[np.integer], cum: I64, need: I64) -> npt.NDArray[np.integer]:
        """Per row, the largest packed key to keep: the whole quantum of the option where `cum` reaches need."""
        enough = cum >= need[:, None]
        first = np.argmax(enough, axis=1)
        level = np.take_along_axis(sorted_keys, first[:, None], axis=1)[:, 0] >> self.bits
        cut = np.left_shift(level.astype(self.dtype) + 1, self.bits) - 1
        reached = enough.any(axis=1) & (level < self.levels)
        return np.where(reached, np.minimum(cut, self._none), self._none)

    def cut(self, need: I64) -> tuple[I64, I64, npt.NDArray[np.bool_]]:
        """The options kept when each group keeps its cheapest ones holding `need[g]` slots.

        Returns (group, column) of every kept option, and per group whether some of its options were left out.
        """
        limit = self._cut_keys(self._top, self._top_cum, need)
        short = np.nonzero((self._top_cum[:, -1] < need) & (self.n_options > self._top.shape[1]))[0]
        if short.size:
            # the cheapest few options of these groups don't hold enough: rank their whole rows
            rows = np.sort(self.keys[short], axis=1)
            cols = rows & ((1 << self.bits) - 1)
            cum = np.cumsum(self.slots[self.sig[short][:, None], cols], axis=1)
            limit[short] = self._cut_keys(rows, cum, need[short])
        mask = (1 << self.bits) - 1
        top = self._top
        # The top holds each row's smallest keys, so where its last key is above the limit every kept option is
        # in it: only the other rows are compared whole.
        partial = top.shape[1] < self.n_cols
        inside = top[:, -1] > limit if partial else np.ones(limit.size, dtype=np.bool_)
        # every row at once (the rows compared whole keep nothing here: their limit is below every key), as
        # group << bits | column, so the group and the column come back by a shift and a mask
        kept_in = top <= np.where(inside, limit, -1)[:, None]
        count = kept_in.sum(axis=1)
        groups = np.arange(limit.size, dtype=np.int64)
        found = [np.repeat(groups << self.bits, count) | (top[kept_in] & mask)]
        rows_out = np.nonzero(~inside)[0]
        if rows_out.size:
            out_keys = self.keys[rows_out]
            kept_out = out_keys <= limit[rows_out, None]
            out_count = kept_out.sum(axis=1)
            found.append(np.repeat(rows_out << self.bits, out_count) | (out_keys[kept_out] & mask))
            count[rows_out] = out_count
        # by group, then column: the order the graph's arcs had when every row was compared whole
        flat = np.sort(np.concatenate(found))
        group, columns = flat >> self.bits, flat & mask
        pruned = count < self.n_options
        return group, columns, pruned
