"""The edge agent: a ZeroMQ ROUTER server that runs DNN tails for many device agents.

- ``edge_agent.runner``: :class:`TailRunner`, the small contract the server needs from a model
  (what each cut's request carries; run a tail), and :class:`SplitTailRunner`, which builds tails
  with ``dnn_split``.
- ``edge_agent.server``: :class:`EdgeServer`, validation, admission, workers, logging, shutdown.

The wire format is ``wire`` (shared with the device agent); ``cutedge edge`` runs the server.
"""
