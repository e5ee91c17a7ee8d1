"""DNN partitioning and profiling, shared by the device agent (heads) and the edge agent (tails).

Modules (each imports torch; this package file does not, so ``import dnn_split`` is free):

* ``dnn_split.models``: ``build_model(name)`` for a torchvision name or ``package.module:factory``,
  seeded random weights or a state_dict file, never a download; ``ModelError`` (one-line message).
* ``dnn_split.partition``: ``partition(name, input_shape) -> Partition``. ``Partition.cuts`` lists
  every candidate cut (``CutSpec``: index, name, crossing ``TensorSpec``s in wire order, bytes,
  head/tail FLOPs, offered); ``Partition.head(cut)`` / ``Partition.tail(cut)`` are cached
  modules with ``tail(*head(x)) == model(x)``. Both agents partition the same model the same
  way, so ``CutSpec.index`` names a cut on the wire.
* ``dnn_split.flops``: FLOPs of one graph node from its module and real shapes.
* ``dnn_split.compress``: float16 / int8 packing of crossing tensors and its accuracy cost.
* ``dnn_split.profile``: timing (measured) or FLOPs estimates, written as the model profile YAML
  that ``controller.profiles.load_model`` reads (``cutedge profile``).
"""
