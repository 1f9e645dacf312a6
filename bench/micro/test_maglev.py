"""Maglev table build: the Cython builder against its pure-Python twin, same inputs."""
import pytest

from lbfast.maglev import DEFAULT_SIZE, build_table, reference_table


def servers(n: int) -> tuple[list[str], list[int]]:
    return [f"10.0.{i // 250}.{i % 250 + 1}:80" for i in range(n)], [100 + (i % 3) * 50 for i in range(n)]


@pytest.mark.parametrize("n", [10, 100])
@pytest.mark.parametrize("impl", ["cython", "python"])
def test_maglev_build(benchmark, impl, n):
    keys, weights = servers(n)
    benchmark.group = f"maglev build: {n} servers, {DEFAULT_SIZE} slots"
    fn = build_table if impl == "cython" else reference_table
    table = benchmark(fn, keys, weights)
    assert len(table) == DEFAULT_SIZE and min(table) >= 0
