"""The simulated tiered-memory machine: the embedded default platform (docs/simulator.md).

``SimHost`` (ptmt.sim.host) implements the Host protocol over a model of a DRAM + CXL/Optane machine
whose kernel files look like Linux 6.x; workloads are YAML specs (docs/workloads.md).
"""
