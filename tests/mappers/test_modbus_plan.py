"""Read coalescing: adjacent properties of one register kind in one request, never across a gap."""

from __future__ import annotations

from edgetwin.mappers.modbus.plan import plan_reads
from edgetwin.mappers.modbus.visitor import Register, Visitor


def _at(register: str, offset: int, limit: int = 1) -> Visitor:
    kind = "BOOLEAN" if register.startswith(("Coil", "Discrete")) else "INT"
    config = {"register": register, "offset": offset}
    if kind == "INT":
        config["limit"] = limit
    return Visitor.parse(config, kind)


def test_adjacent_and_overlapping_properties_share_a_request() -> None:
    due = [
        ("b", _at("HoldingRegister", 1, 2)),
        ("a", _at("HoldingRegister", 0)),
        ("c", _at("HoldingRegister", 3)),
        ("c2", _at("HoldingRegister", 3)),
        ("far", _at("HoldingRegister", 10)),
        ("in", _at("InputRegister", 4)),
        ("coil", _at("CoilRegister", 0)),
        ("coil2", _at("CoilRegister", 1)),
    ]
    ranges = plan_reads(due)
    shapes = [(r.register, r.start, r.count, sorted(n for n, _ in r.members)) for r in ranges]
    assert shapes == [
        (Register.COIL, 0, 2, ["coil", "coil2"]),
        (Register.HOLDING, 0, 4, ["a", "b", "c", "c2"]),
        (Register.HOLDING, 10, 1, ["far"]),
        (Register.INPUT, 4, 1, ["in"]),
    ]
    holding = ranges[1]
    b = next(v for n, v in holding.members if n == "b")
    assert holding.items_of(b, [10, 11, 12, 13]) == [11, 12]


def test_a_request_never_asks_for_more_than_modbus_allows() -> None:
    due = [(f"p{i}", _at("HoldingRegister", i * 4, 4)) for i in range(40)]  # 160 registers
    ranges = plan_reads(due)
    assert [(r.start, r.count) for r in ranges] == [(0, 124), (124, 36)]


def test_without_coalescing_each_property_is_its_own_request() -> None:
    due = [("a", _at("HoldingRegister", 0)), ("b", _at("HoldingRegister", 1))]
    assert len(plan_reads(due, coalesce=False)) == 2
