"""What-if strategies applied to a step, identically in the engine's trace (fake tensors)
and in the real measurement: both are handed the same :class:`apply.WorkloadStrategies`
object (the engine's :class:`~memlens.engine.protocol.StepStrategies`) and run
:func:`memlens.engine.step.run_step`:

- :mod:`.precision`: pure half precision, or autocast with fp32 master weights and a
  ``GradScaler`` for fp16;
- :mod:`.checkpointing`: activation checkpointing of the model's repeated blocks;
- :mod:`.freezing` and :mod:`.lora`: parameters without gradients, low-rank adapters;
- :mod:`.quantize`: linear weights in bitsandbytes' int8 / 4-bit layouts;
- :mod:`.optimizers`: the optimizers and their implementations (loop, foreach, fused);
- :mod:`.offload`: optimizer state and fp32 master weights and gradients in host memory;
- :mod:`.data`: host memory of the data pipeline (closed form).
"""
