"""End-to-end benchmark cases on the netns testbed: LBs, backends, wrk, CPU accounting."""
