"""Export MambaCSR to ONNX (one `SelectiveScan` node per scan) and quantise it."""
