"""The one backoff keeps its bound: no delay over max_delay, jitter included (a cloud sync
with retry_max_delay 30 s waited 41-44 s before)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgetwin.tasks import Backoff


@given(
    first=st.floats(min_value=0.01, max_value=5.0),
    max_delay=st.floats(min_value=0.01, max_value=60.0),
)
def test_no_delay_is_over_the_bound_and_they_grow_to_it(first: float, max_delay: float) -> None:
    backoff = Backoff(max_delay, first=first)
    delays = [backoff.next_delay() for _ in range(40)]
    assert max(delays) <= max_delay
    assert min(delays) >= min(first, max_delay) * 0.5
    assert delays[-1] >= max_delay * 0.5  # doubled up to the bound by then
    backoff.reset()
    assert backoff.next_delay() <= first * 1.5
