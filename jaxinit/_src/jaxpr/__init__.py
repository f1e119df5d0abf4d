"""Finding the linear layers of any JAX model, in execution order, from its jaxpr.

A *layer* is a ``dot_general`` or ``conv_general_dilated`` (any number of
spatial dimensions, grouped or depthwise) one of whose operands is a parameter
leaf seen through layout operations only, and whose other operand depends on
the model's inputs. This covers ``Dense``, ``DenseGeneral``/``LinearGeneral``,
``Einsum``, ``Conv`` of every rank, attention projections, equinox's ``W @ x``
and hand-written ``x @ w``, in Flax linen, Flax nnx and pure functions alike,
because all of them reach XLA as those two primitives. Not layers: embedding
lookups (gathers), normalization scales and PReLU slopes (elementwise
multiplies), and products between activations (``q @ k.T``).

"Layout operations" are the ones that move or cast entries without mixing
them: ``reshape``, ``transpose``, ``rev`` (a flipped kernel), ``squeeze``, ``broadcast_in_dim``,
``convert_element_type`` (between floating types), ``copy``, ``neg``, a
multiply or divide by a scalar constant, and static slices (``w[3]``,
the per-step slice of ``nn.scan``/``nnx.scan`` over stacked layers). All of
them are linear, so scaling the parameter entries a layer reads by ``s``
scales the layer's output by exactly ``s`` — the fact LSUV relies on. A weight
computed by anything else (weight normalization, spectral normalization,
masking by another array) is not a layer: scaling its parameter would not
scale the output.

How it works: the model ``f(params, *args)`` is traced once with
``jax.make_jaxpr`` and flattened into a straight-line *program*: calls
(``jit``, ``closed_call``), ``custom_jvp``/``custom_vjp`` functions and
``remat``/``checkpoint`` are inlined; a ``scan`` whose body contains a layer is
unrolled (one layer per step and slice of the stacked weight); ``cond``,
``while`` and other control flow that contains a layer raise an error naming
it (which branch runs, or how often, is only known at run time). Execution
order is the order of the equations, which is the order in which the model's
Python code called the layers — not the order in which the parameters are
named or registered, so residual and branched networks come out right.

The output of a layer: the ``dot_general``/``conv`` result plus its bias when
the very next operation (after layout operations only) adds a parameter whose
size equals the layer's number of output features — what a Flax or PyTorch
layer returns, and what PyTorch's forward hooks see. ``Layer.post`` is the end
of the elementwise chain that follows (the activation: ReLU, GELU, tanh, ...).

Tied weights: a layer whose weight entries overlap those of an earlier layer
(the same ``Dense`` called twice) is reported with ``tied_to`` set to the first
such layer, and a layer whose weight was already read earlier by something
that is not a layer (the lookup of an embedding reused as the output
projection) with ``read_earlier``. LSUV scales a weight once, at its first use
in execution order, and only when that first use is a layer: later uses see
the scaled weight, and a weight read earlier by a non-layer is left alone,
since scaling it would change everything computed after that read.

:func:`.run.evaluate` is an interpreter over the flattened program: run
under ``jax.jit`` it costs one forward pass (the Python loop is unrolled at
trace time, so compile time is linear in depth), and a hook called at each
layer's output can read that output and replace the layer's weight, bias and
output before the forward pass continues. LSUV and the diagnostics use it.

Modules, each importing only the ones listed before it:

* :mod:`.index`: static indices into a parameter leaf (read, write, compare, name).
* :mod:`.records`: the data records (steps, origins, layers, hook input and output).
* :mod:`.flatten`: the traced jaxpr flattened into steps, with dataflow facts.
* :mod:`.discover`: the layers among the flattened steps (bias, activation, ties).
* :mod:`.program`: :func:`~.program.trace` and the :class:`~.program.Program` lookups.
* :mod:`.keys`: value-based keys of a program's parts.
* :mod:`.segments`: the program cut at each layer, with signatures for caching.
* :mod:`.run`: the interpreter (:func:`~.run.evaluate`, :func:`~.run.run_segment`).
"""
