"""lbfast benchmark suite: pytest-benchmark micro benchmarks and end-to-end runs on the netns testbed."""
