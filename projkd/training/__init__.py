"""The speed machinery under the estimators: mixed precision, compilation,
device placement, sliced array batches and the epoch's device records.

- :mod:`.precision`: autocast and the scaled optimizer step;
- :mod:`.compiling`: ``torch.compile`` for a network's forward with its features;
- :mod:`.device`: where the data live, moves to the device, prefetching;
- :mod:`.batching`: batches sliced from arrays;
- :mod:`.records`: per-batch statistics kept on the device until the epoch ends.
"""
