"""CPU C kernel for SelectiveScan (placeholder until the kernel lands: always unavailable)."""


def selective_scan_cpu(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus):
    return None
