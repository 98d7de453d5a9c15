"""bitlut dse: design-space sweeps over architecture configs and workloads (docs/dse.md).

A sweep file (`dse.sweep`) names a base config, axes over its fields and the workloads; every
point is priced by the roofline, area and energy models (`dse.evaluate`), the points near the
Pareto front (`dse.pareto`) again by the SimPy cycle model (`dse.driver`), with results in a
content-addressed store (`dse.store`) that makes a killed sweep resume where it stopped, and a
report (`dse.report`).
"""
