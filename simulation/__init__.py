"""The trace-driven harness around the controller: what runs without hardware.

Trace readers and synthetic uplinks (``traces``), camera arrivals (``arrivals``), experiment
configs (``experiment``), the slot dynamics and the frame-accurate simulator (``simulator``), the
batched engine for sweeps (``batchsim``), baselines (``baselines``), offline bounds
(``bounds``, ``hindsight``), sweeps (``sweep``) and plots (``plots``, ``tradeoff_plots``).
numpy and cvxpy only: never torch or zmq. What the device runs every slot stays in
``controller/``.
"""
