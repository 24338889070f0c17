"""Every deployment format of one model in one table (`m2s2l-edge bench --all`): ``compare.compare_formats``."""

from m2s2l_edge.formats.compare import FORMATS, CompareConfig, compare_formats, format_table, to_markdown

__all__ = ["FORMATS", "CompareConfig", "compare_formats", "format_table", "to_markdown"]
