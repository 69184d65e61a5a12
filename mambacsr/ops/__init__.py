"""The SelectiveScan op: contract, reference, and the implementations behind one name."""
from .chunked import selective_scan_chunked
from .reference import check_scan_shapes, selective_scan_ref
from .selective_scan import as_token_rows, selective_scan, selective_scan_op, selective_scan_token_rows

__all__ = ["as_token_rows", "selective_scan", "selective_scan_op", "selective_scan_token_rows", "selective_scan_ref",
           "selective_scan_chunked", "check_scan_shapes"]
