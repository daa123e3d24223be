"""Read coalescing: the properties due on one device, as few read requests as fit.

Properties of the same register kind whose address ranges touch or overlap
are read in one request, up to the Modbus limit per request (125 registers,
2,000 bits). Gaps are never read: a device may refuse an address between
two properties.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from edgetwin.mappers.modbus.visitor import Register, Visitor


@dataclass(slots=True)
class ReadRange:
    """One read request and the properties it serves."""

    register: Register
    start: int
    count: int
    members: list[tuple[str, Visitor]] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + self.count

    def items_of(self, visitor: Visitor, items: list[int] | list[bool]) -> list[int] | list[bool]:
        """A member's part of what this range read."""
        first = visitor.offset - self.start
        return items[first : first + visitor.limit]


def plan_reads(due: Iterable[tuple[str, Visitor]], *, coalesce: bool = True) -> list[ReadRange]:
    """The read requests for these properties, in register and address order."""
    ordered = sorted(due, key=lambda item: (item[1].register, item[1].offset, item[1].limit))
    ranges: list[ReadRange] = []
    for name, visitor in ordered:
        last = ranges[-1] if ranges else None
        if (
            coalesce
            and last is not None
            and last.register == visitor.register
            and visitor.offset <= last.end
            and max(last.end, visitor.end) - last.start <= visitor.register.max_read
        ):
            last.count = max(last.end, visitor.end) - last.start
        else:
            last = ReadRange(visitor.register, visitor.offset, visitor.limit)
            ranges.append(last)
        last.members.append((name, visitor))
    return ranges
