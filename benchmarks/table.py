"""The tables every benchmark prints (the README copies their rows)."""

from __future__ import annotations

from collections.abc import Sequence


def print_table(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    print(f"{'measure'.ljust(width)}  value")
    print(f"{'-' * width}  -----")
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")


def print_grid(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
    """A table of several columns, in Markdown's pipe layout; ``right``: columns aligned right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        )

    print(line(header))
    print("-|-".join("-" * width for width in widths))
    for row in rows:
        print(line(row))
