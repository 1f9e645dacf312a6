"""lbfast data plane: XDP/eBPF loader and maps, userspace L4 proxy, L7 proxy, hashing."""
