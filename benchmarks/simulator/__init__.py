"""The discrete-event simulator behind `benchmarks/simulate.py`, in parts.

- `profiles`: link profiles and measured edge/device profiles (`Profile`, `h200_profile`);
- `engine`: the clock and the shared resources (workers, batching worker, downlink, edge);
- `jobs`: the life of one job in the simulation (`Device`), recording its critical path;
- `scenario`: one scenario run to the end and summarised;
- `sweep`: the sweep over devices, speeds and links, capacity, the goals, tables;
- `breakdown`: where a job's time goes, stage by stage, per policy and link.
"""
