"""Selective-scan operators: the reference, the fast paths and the dispatcher (see ``dispatch``)."""

from m2s2l_edge.ops.dispatch import BACKENDS, resolve_backend, selective_scan
from m2s2l_edge.ops.selective_scan import check_scan_inputs, selective_scan_ref, selective_scan_torch

__all__ = [
    "BACKENDS",
    "check_scan_inputs",
    "resolve_backend",
    "selective_scan",
    "selective_scan_ref",
    "selective_scan_torch",
]
